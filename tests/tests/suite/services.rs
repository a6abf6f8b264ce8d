//! End to end: the kube-proxy binary programs the HOST's iptables for Services of a real
//! cluster (etcd, the apiserver, one kubelet on the host's dockerd, the controller-manager for
//! EndpointSlices), and traffic from the test process reaches pods through cluster IPs and node
//! ports.
//!
//! Host safety (DESIGN.md, "Safety rule"): before any packet to the service or pod ranges, the
//! sink routes of `deploy/prereqs.sh` (`pod_network_sink`) are ensured, so an untranslated packet
//! dies on the local `kube-sink` bridge. Traffic goes only to loopback, to the cluster IPs of
//! this test's Services and to this test's pods. The host's nat and filter tables are shared by
//! every test: a file lock serialises the tests that run a kube-proxy, and a guard runs
//! `kube-proxy --cleanup` (and restores `route_localnet`) when the test ends, passed or not.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::etcd::Etcd;
use e2e::eventually;
use e2e::kubectl::Kubectl;
use e2e::kubelet::Kubelet;
use e2e::server::{Component, Process};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOCK: &str = "/tmp/rkube-e2e-host-iptables.lock";
const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The sink routes for 10.96.0.0/12 and 10.244.0.0/16, made the way the README's commands make
/// them; fails the test if they are not there afterwards.
fn ensure_pod_network_sink() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let status = Command::new("bash")
        .args(["-c", ". deploy/prereqs.sh && pod_network_sink"])
        .current_dir(root)
        .status()
        .expect("bash runs");
    assert!(status.success(), "pod_network_sink failed");
    let routes = Command::new("ip").args(["route", "show"]).output().expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout);
    for net in ["10.96.0.0/12 dev kube-sink", "10.244.0.0/16 dev kube-sink"] {
        assert!(routes.contains(net), "sink route {net} missing:\n{routes}");
    }
}

fn iptables_save(table: &str) -> String {
    let out = Command::new("iptables-save").args(["-t", table]).output().expect("iptables-save");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kube_chains() -> Vec<String> {
    ["nat", "filter"]
        .iter()
        .flat_map(|t| {
            iptables_save(t)
                .lines()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|l| l.split(' ').next())
                .filter(|c| c.starts_with("KUBE-"))
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The KUBE-SVC chain that KUBE-SERVICES sends traffic for `ip` to, if any.
fn service_chain_for(ip: &str) -> Option<String> {
    let dest = format!("-d {ip}/32 ");
    iptables_save("nat").lines().filter(|l| l.starts_with("-A KUBE-SERVICES ") && l.contains(&dest)).find_map(|l| {
        let words: Vec<&str> = l.split(' ').collect();
        words.windows(2).find(|w| w[0] == "-j").map(|w| w[1].to_string())
    })
}

/// The kube-proxy binary on the host, owning the host's KUBE-* rules while it lives. Dropping it
/// stops the proxy, runs `kube-proxy --cleanup`, puts `route_localnet` back and releases the lock.
struct HostProxy {
    proxy: Option<std::process::Child>,
    log: std::path::PathBuf,
    route_localnet_before: String,
    healthz: u16,
    metrics: u16,
    _lock: std::fs::File,
}

impl HostProxy {
    fn start(kubeconfig: &std::path::Path, node: &str, log: &std::path::Path) -> HostProxy {
        let lock = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(LOCK).expect("lock file");
        lock.lock().expect("lock the host's iptables");
        let route_localnet_before = std::fs::read_to_string(ROUTE_LOCALNET).unwrap_or_else(|_| "0".into());
        // Whatever an earlier, killed run left behind.
        cleanup();
        let (healthz, metrics) = (e2e::free_port(), e2e::free_port());
        let flags = [
            "--hostname-override".to_string(),
            node.to_string(),
            "--healthz-bind-address".into(),
            format!("127.0.0.1:{healthz}"),
            "--metrics-bind-address".into(),
            format!("127.0.0.1:{metrics}"),
            // Test queries never leave the machine: names outside the cluster get SERVFAIL.
            "--cluster-dns-upstream".into(),
            "none".into(),
        ];
        let proxy = e2e::child_command(e2e::binary("kube-proxy"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(flags)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("kube-proxy starts");
        HostProxy { proxy: Some(proxy), log: log.to_path_buf(), route_localnet_before, healthz, metrics, _lock: lock }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as a node shutdown sends it: the proxy must exit 0 within a few seconds.
    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut p = self.proxy.take()?;
        let _ = Command::new("kill").args(["-TERM", &p.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(status)) = p.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = p.kill();
        let _ = p.wait();
        None
    }
}

fn cleanup() {
    let out = Command::new(e2e::binary("kube-proxy")).arg("--cleanup").output().expect("kube-proxy --cleanup");
    assert!(out.status.success(), "kube-proxy --cleanup: {}", String::from_utf8_lossy(&out.stderr));
}

impl Drop for HostProxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- kube-proxy log ----\n{}", self.log());
        }
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = Command::new(e2e::binary("kube-proxy")).arg("--cleanup").status();
        let _ = std::fs::write(ROUTE_LOCALNET, self.route_localnet_before.trim());
    }
}

/// `GET path` over HTTP/1.0: (status code, body). Connect and read are bounded.
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let timed_out = |what: &str| std::io::Error::new(std::io::ErrorKind::TimedOut, what.to_string());
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| timed_out("connect timed out"))??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await.map_err(|_| timed_out("read"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.trim().to_string()).unwrap_or_default();
    Ok((code, body))
}

fn web_pod(name: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: web}}}}
spec:
  nodeName: {node}
  containers:
  - name: web
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "hostname > /tmp/index.html; exec httpd -f -p 8080 -h /tmp"]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /index.html, port: http}}, periodSeconds: 1}}
"#
    )
}

const SERVICES: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: default}
spec:
  selector: {app: nobody-has-this-label}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: http}]
"#;

/// The cluster IP of Service `name`; it must lie in the sink-routed service range.
async fn cluster_ip_of(services: &Api<Service>, name: &str) -> Ipv4Addr {
    let ip: Ipv4Addr = services
        .get(name)
        .await
        .expect("service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("cluster IP")
        .parse()
        .expect("IPv4");
    assert!(ip.octets()[0] == 10 && (96..112).contains(&ip.octets()[1]), "{ip} is in 10.96.0.0/12 (sink-routed)");
    ip
}

#[tokio::test]
async fn cluster_ips_and_node_ports_reach_the_ready_pods_empty_services_reject_and_deleted_services_lose_their_chains()
{
    if !is_root() {
        println!("skipped: kube-proxy needs root to program iptables");
        return;
    }
    let c = ProxiedCluster::start().await;
    let (client, k, node) = (c.client.clone(), &c.k, &c.node);

    let yaml = format!("{}---{}---{SERVICES}", web_pod("web-a", &node.name), web_pod("web-b", &node.name));
    k.run_stdin(&["apply", "-f", "-"], &yaml).ok();
    for name in ["web-a", "web-b"] {
        c.ready_ip(name).await;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web = services.get("web").await.expect("web");
    let spec = web.spec.expect("spec");
    let cluster_ip: Ipv4Addr = spec.cluster_ip.expect("cluster IP").parse().expect("IPv4");
    let node_port = spec.ports.expect("ports")[0].node_port.expect("node port") as u16;
    let nobody_ip = cluster_ip_of(&services, "nobody").await;
    assert_eq!(cluster_ip_of(&services, "web").await, cluster_ip);

    // ClusterIP from the node: both pods answer across requests.
    let seen = eventually(Duration::from_secs(60), "both pods behind the cluster IP", || async {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            // Until the rules are in, a request dies in the sink: retry rather than wait 20 times.
            let Ok((200, body)) = http_get(SocketAddr::from((cluster_ip, 80)), "/index.html").await else {
                return None;
            };
            seen.insert(body);
        }
        (seen.len() == 2).then_some(seen)
    })
    .await;
    assert_eq!(seen, BTreeSet::from(["web-a".to_string(), "web-b".to_string()]), "{}", c.proxy.log());

    // NodePort on loopback (route_localnet, set by the proxy).
    let (code, body) = eventually(Duration::from_secs(30), "the node port on 127.0.0.1", || async {
        http_get(SocketAddr::from(([127, 0, 0, 1], node_port)), "/index.html").await.ok()
    })
    .await;
    assert_eq!(code, 200);
    assert!(body == "web-a" || body == "web-b", "{body}");

    // ClientIP session affinity: every request from this node reaches the same pod.
    let sticky_ip = cluster_ip_of(&services, "sticky").await;
    let first = eventually(Duration::from_secs(30), "the sticky Service", || async {
        match http_get(SocketAddr::from((sticky_ip, 80)), "/index.html").await {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    })
    .await;
    for _ in 0..10 {
        let (code, body) = http_get(SocketAddr::from((sticky_ip, 80)), "/index.html").await.expect("sticky");
        assert_eq!((code, body.as_str()), (200, first.as_str()), "affinity keeps the same pod");
    }

    // From a pod: web-a reaches the Service, including itself through it (hairpin).
    let container = c.container("web-a").await;
    let url = format!("http://{cluster_ip}/index.html");
    eventually(Duration::from_secs(60), "web-a reaching both pods through the cluster IP", || {
        let (container, url) = (container.clone(), url.clone());
        async move {
            let seen: BTreeSet<String> =
                (0..16).filter_map(|_| exec_in(&container, &["timeout", "5", "wget", "-qO-", &url])).collect();
            (seen.len() == 2).then_some(())
        }
    })
    .await;

    // A deleted pod leaves the rotation: every request then reaches the other one.
    k.run(&["delete", "pod", "web-b", "--wait=false"]).ok();
    eventually(Duration::from_secs(60), "only web-a behind the cluster IP", || async {
        for _ in 0..10 {
            match http_get(SocketAddr::from((cluster_ip, 80)), "/index.html").await {
                Ok((200, body)) if body == "web-a" => {}
                _ => return None,
            }
        }
        Some(())
    })
    .await;

    // A Service with no endpoints is rejected at once, not left to time out.
    let refused = eventually(Duration::from_secs(30), "a quick refusal from the empty Service", || async {
        let start = Instant::now();
        match http_get(SocketAddr::from((nobody_ip, 80)), "/").await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(start.elapsed()),
            _ => None,
        }
    })
    .await;
    assert!(refused < Duration::from_secs(1), "refused after {refused:?}");

    // The proxy reports healthy and exposes its sync metrics.
    let (code, _) = http_get(SocketAddr::from(([127, 0, 0, 1], c.proxy.healthz)), "/healthz").await.expect("healthz");
    assert_eq!(code, 200);
    let (code, metrics) =
        http_get(SocketAddr::from(([127, 0, 0, 1], c.proxy.metrics)), "/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    for name in ["sync_proxy_rules_duration_seconds", "sync_proxy_rules_last_timestamp_seconds"] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }

    // Deleting the Service removes its KUBE-SVC chain.
    let chain = service_chain_for(&cluster_ip.to_string()).expect("a KUBE-SERVICES rule for the web cluster IP");
    assert!(chain.starts_with("KUBE-SVC-"), "{chain}");
    k.run(&["delete", "service", "web", "nobody", "sticky"]).ok();
    eventually(Duration::from_secs(30), "the web Service's chain gone", || {
        let chain = chain.clone();
        async move { (!iptables_save("nat").contains(&format!(":{chain} "))).then_some(()) }
    })
    .await;
    assert_eq!(service_chain_for(&cluster_ip.to_string()), None);
    k.run(&["delete", "pod", "web-a", "--wait=false"]).ok();

    // SIGTERM stops the proxy cleanly and leaves its rules in place (as upstream: a restarted
    // proxy takes them over without a gap).
    let ProxiedCluster { mut proxy, .. } = c;
    let status = proxy.terminate();
    assert!(status.is_some_and(|s| s.success()), "exit on SIGTERM: {status:?}\n{}", proxy.log());
    assert!(iptables_save("nat").contains(":KUBE-SERVICES "), "rules stay after SIGTERM");

    // Cleanup leaves no KUBE-* chain in the host's nat and filter tables.
    drop(proxy);
    let left = kube_chains();
    assert!(left.is_empty(), "KUBE-* chains left after kube-proxy --cleanup: {left:?}");
}

#[tokio::test]
async fn kube_proxy_refuses_bad_flags_in_one_line() {
    for (args, says) in [
        (vec!["--nope"], "--nope"),
        (vec!["--kubeconfig", "/nonexistent", "--cluster-cidr", "10.244.0.0/40"], "--cluster-cidr"),
        (vec![], "--kubeconfig is required"),
    ] {
        let out = Command::new(e2e::binary("kube-proxy"))
            .args(&args)
            .args(["--healthz-bind-address", "", "--metrics-bind-address", ""])
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("kube-proxy: ") && err.contains(says), "{args:?}: {err}");
    }
}

/// The node's InternalIP as its kubelet reports it.
async fn internal_ip(client: &kube::Client, node: &str) -> Ipv4Addr {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let n = nodes.get(node).await.expect("node");
    let addr = n.status.and_then(|s| s.addresses).unwrap_or_default().into_iter().find(|a| a.type_ == "InternalIP");
    addr.expect("InternalIP").address.parse().expect("IPv4")
}

#[tokio::test]
async fn load_balancers_answer_on_the_node_address_and_a_local_policy_reports_its_endpoints_on_the_health_check_port() {
    if !is_root() {
        println!("skipped: kube-proxy needs root to program iptables");
        return;
    }
    // No --load-balancer-ip-pool: LoadBalancer Services get the Ready nodes' InternalIPs.
    let c = ProxiedCluster::start().await;
    let (client, k, node) = (c.client.clone(), &c.k, &c.node);
    let services_yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{name: http, port: 18080, targetPort: http}]
"#;
    let yaml = format!("{}---{services_yaml}", web_pod("web-a", &node.name));
    k.run_stdin(&["apply", "-f", "-"], &yaml).ok();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let node_ip = internal_ip(&client, &node.name).await;

    // The load-balancer controller publishes the node's address; kubectl shows it.
    let ingress = eventually(Duration::from_secs(30), "an ingress address", || async {
        let s = services.get("lb").await.ok()?;
        let ips: Vec<String> = s.status?.load_balancer?.ingress?.into_iter().filter_map(|i| i.ip).collect();
        (!ips.is_empty()).then_some(ips)
    })
    .await;
    assert_eq!(ingress, [node_ip.to_string()]);
    let shown = k.run(&["get", "service", "lb", "--no-headers"]).ok().stdout;
    assert!(shown.contains(&node_ip.to_string()), "{shown}");

    // Traffic to the ingress address and port reaches the pod.
    let (code, body) = eventually(Duration::from_secs(90), "the pod through the load-balancer address", || async {
        http_get(SocketAddr::from((node_ip, 18080)), "/index.html").await.ok().filter(|(c, _)| *c == 200)
    })
    .await;
    assert_eq!((code, body.as_str()), (200, "web-a"), "{}", c.proxy.log());
    // And through the node port on the node's address (from outside the pod network).
    let spec = services.get("lb").await.expect("lb").spec.expect("spec");
    let node_port = spec.ports.expect("ports")[0].node_port.expect("node port") as u16;
    let (code, _) = http_get(SocketAddr::from((node_ip, node_port)), "/index.html").await.expect("node port");
    assert_eq!(code, 200);

    // externalTrafficPolicy Local: the health-check node port says how many endpoints are here.
    let hc = spec.health_check_node_port.expect("health-check node port") as u16;
    let (code, body) = eventually(Duration::from_secs(30), "the health check answering", || async {
        http_get(SocketAddr::from(([127, 0, 0, 1], hc)), "/healthz").await.ok().filter(|(c, _)| *c == 200)
    })
    .await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("health check JSON");
    assert_eq!((code, json["localEndpoints"].as_i64()), (200, Some(1)), "{body}");
    // With the pod gone the node has no endpoint: 503, so a load balancer stops sending here.
    k.run(&["delete", "pod", "web-a", "--wait=false"]).ok();
    eventually(Duration::from_secs(60), "the health check failing", || async {
        let (code, _) = http_get(SocketAddr::from(([127, 0, 0, 1], hc)), "/healthz").await.ok()?;
        (code == 503).then_some(())
    })
    .await;
    k.run(&["delete", "service", "lb"]).ok();
}

/// A cluster with a kube-proxy on the host, for the network ledger rows.
struct ProxiedCluster {
    client: kube::Client,
    k: Kubectl,
    node: Kubelet,
    proxy: HostProxy,
    _cm: Component,
    api: Process,
    _etcd: Etcd,
}

impl ProxiedCluster {
    async fn start() -> ProxiedCluster {
        let etcd = Etcd::start().await;
        let api = Process::start(&etcd.endpoint(), &[]).await;
        let client = api.endpoint.kube_client().await;
        let node = Kubelet::start(&api.endpoint, &[]).await;
        node.wait_ready(&client).await;
        let kc = &api.endpoint.kubeconfig;
        let cm = Component::start("controller-manager", kc, &node.dir.path().join("cm.log"), &[]);
        let k = Kubectl::new(&api.endpoint);
        ensure_pod_network_sink();
        let proxy = HostProxy::start(kc, &node.name, &node.dir.path().join("kube-proxy.log"));
        ProxiedCluster { client, k, node, proxy, _cm: cm, api, _etcd: etcd }
    }

    /// Netexec pods labelled `app: <app>`, Ready; returns their pod IPs by name.
    async fn netexec_pods(&self, app: &str, names: &[&str]) -> Vec<(String, Ipv4Addr)> {
        let yaml: Vec<String> = names
            .iter()
            .map(|name| {
                format!(
                    r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: netexec
    image: netexec:1.2
    imagePullPolicy: IfNotPresent
    ports: [{{name: http, containerPort: 8080}}, {{name: udp, containerPort: 8081, protocol: UDP}}]
    readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}
"#,
                    node = self.node.name
                )
            })
            .collect();
        self.k.run_stdin(&["apply", "-f", "-"], &yaml.join("---")).ok();
        let mut out = Vec::new();
        for name in names {
            out.push((name.to_string(), self.ready_ip(name).await));
        }
        out
    }

    /// Waits until pod `name` is Ready; its pod IP.
    async fn ready_ip(&self, name: &str) -> Ipv4Addr {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        eventually(Duration::from_secs(90), &format!("pod {name} Ready"), || {
            let pods = pods.clone();
            async move {
                let s = pods.get(name).await.ok()?.status?;
                let ready = s.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then(|| s.pod_ip.clone()).flatten()?.parse::<Ipv4Addr>().ok()
            }
        })
        .await
    }

    /// The docker id of a pod's first container.
    async fn container(&self, pod: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let p = pods.get(pod).await.expect("pod");
        p.status
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().next())
            .and_then(|c| c.container_id)
            .expect("container id")
            .trim_start_matches("docker://")
            .to_string()
    }
}

/// One UDP datagram to `addr`; the answer, if one comes within 2 s.
async fn udp_ask(addr: SocketAddr, msg: &str) -> Option<String> {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.send_to(msg.as_bytes(), addr).await.ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Runs `netexec` or `wget` inside a container: stdout on success.
fn exec_in(container: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("docker").arg("exec").arg(container).args(args).output().expect("docker exec");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test]
async fn c195_c196_c197_c198_pods_reach_each_other_and_the_node_reaches_them_by_pod_ip_over_http_and_udp() {
    if !is_root() {
        println!("skipped: kube-proxy needs root to program iptables");
        return;
    }
    let c = ProxiedCluster::start().await;
    let pods = c.netexec_pods("net", &["net-a", "net-b"]).await;
    let client = c.container("net-a").await;
    for (name, ip) in &pods {
        // C195 / C196: from a pod, by pod IP, each pod answers with its own name.
        let http = exec_in(&client, &["timeout", "5", "wget", "-qO-", &format!("http://{ip}:8080/hostname")]);
        assert_eq!(http.as_deref(), Some(name.as_str()), "HTTP from net-a to {name}");
        let udp = exec_in(&client, &["/netexec", "dial", "udp", &format!("{ip}:8081"), "hostname"]);
        assert_eq!(udp.as_deref(), Some(name.as_str()), "UDP from net-a to {name}");
        // C197 / C198: from the node's network namespace (as a hostNetwork pod would be).
        let (code, body) = http_get(SocketAddr::from((*ip, 8080)), "/hostname").await.expect("HTTP from the node");
        assert_eq!((code, body.as_str()), (200, name.as_str()));
        assert_eq!(udp_ask(SocketAddr::from((*ip, 8081)), "hostname").await.as_deref(), Some(name.as_str()));
    }
    // Pod-to-pod traffic keeps the pod IP: the server sees the client pod's own address.
    let seen = exec_in(&client, &["timeout", "5", "wget", "-qO-", &format!("http://{}:8080/clientip", pods[1].1)]);
    let seen_ip = seen.as_deref().and_then(|s| s.rsplit_once(':')).map(|(ip, _)| ip.to_string());
    assert_eq!(seen_ip, Some(pods[0].1.to_string()), "no NAT between pods");
    c.k.run(&["delete", "pod", "net-a", "net-b", "--wait=false"]).ok();
}

#[tokio::test]
async fn c204_c205_c207_c208_c209_c213_c214_c217_service_types_affinity_and_protocols_through_kube_proxy() {
    if !is_root() {
        println!("skipped: kube-proxy needs root to program iptables");
        return;
    }
    let c = ProxiedCluster::start().await;
    c.netexec_pods("aff", &["aff-a", "aff-b"]).await;
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let node_ip = internal_ip(&c.client, &c.node.name).await;
    let names = |seen: &BTreeSet<String>| seen.iter().cloned().collect::<Vec<_>>();
    // Who answers `n` requests to `addr`.
    let answers = |addr: SocketAddr, n: usize| async move {
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            match http_get(addr, "/hostname").await {
                Ok((200, body)) => {
                    seen.insert(body);
                }
                _ => return None,
            }
        }
        Some(seen)
    };

    // C204 / C205: an ExternalName Service turned ClusterIP, then NodePort, gets a cluster IP
    // (and a node port) and is reachable on them.
    let external = r#"
apiVersion: v1
kind: Service
metadata: {name: turn, namespace: default}
spec: {type: ExternalName, externalName: example.invalid}
"#;
    c.k.run_stdin(&["apply", "-f", "-"], external).ok();
    let to_cluster_ip = r#"{"spec": {"type": "ClusterIP", "externalName": null, "selector": {"app": "aff"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}"#;
    c.k.run(&["patch", "service", "turn", "--type=merge", "-p", to_cluster_ip]).ok();
    let turn_ip = cluster_ip_of(&services, "turn").await;
    eventually(Duration::from_secs(60), "the turned Service on its cluster IP", || async {
        answers(SocketAddr::from((turn_ip, 80)), 1).await
    })
    .await;
    c.k.run(&["patch", "service", "turn", "--type=merge", "-p", r#"{"spec": {"type": "NodePort"}}"#]).ok();
    let spec = services.get("turn").await.expect("turn").spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some(turn_ip.to_string().as_str()), "the cluster IP is kept");
    let turn_port = spec.ports.expect("ports")[0].node_port.expect("node port") as u16;
    eventually(Duration::from_secs(60), "the node port on the node's address", || async {
        answers(SocketAddr::from((node_ip, turn_port)), 1).await
    })
    .await;

    // C207 / C209 / C214 / C208 / C213: a NodePort Service with sessionAffinity None spreads over
    // both pods on its cluster IP and node port; ClientIP pins one client to one pod; None again
    // spreads again.
    let np = r#"
apiVersion: v1
kind: Service
metadata: {name: aff, namespace: default}
spec:
  type: NodePort
  selector: {app: aff}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;
    c.k.run_stdin(&["apply", "-f", "-"], np).ok();
    let aff_ip = cluster_ip_of(&services, "aff").await;
    let aff_port = services.get("aff").await.expect("aff").spec.expect("spec").ports.expect("ports")[0]
        .node_port
        .expect("port") as u16;
    let both = BTreeSet::from(["aff-a".to_string(), "aff-b".to_string()]);
    for addr in [SocketAddr::from((aff_ip, 80)), SocketAddr::from((node_ip, aff_port))] {
        let seen = eventually(Duration::from_secs(60), &format!("both pods behind {addr}"), || async {
            answers(addr, 30).await.filter(|s| s.len() == 2)
        })
        .await;
        assert_eq!(seen, both);
    }
    c.k.run(&["patch", "service", "aff", "-p", r#"{"spec": {"sessionAffinity": "ClientIP"}}"#]).ok();
    for addr in [SocketAddr::from((aff_ip, 80)), SocketAddr::from((node_ip, aff_port))] {
        let pinned = eventually(Duration::from_secs(60), &format!("one pod behind {addr}"), || async {
            answers(addr, 20).await.filter(|s| s.len() == 1)
        })
        .await;
        assert_eq!(pinned.len(), 1, "{:?}", names(&pinned));
    }
    c.k.run(&["patch", "service", "aff", "-p", r#"{"spec": {"sessionAffinity": "None"}}"#]).ok();
    eventually(Duration::from_secs(60), "spread again", || async {
        answers(SocketAddr::from((aff_ip, 80)), 30).await.filter(|s| s.len() == 2)
    })
    .await;

    // C217: one port number for TCP and UDP; removing UDP stops only UDP.
    let both_protocols = r#"
apiVersion: v1
kind: Service
metadata: {name: dual, namespace: default}
spec:
  selector: {app: aff}
  ports:
  - {name: tcp, port: 8080, targetPort: 8080, protocol: TCP}
  - {name: udp, port: 8080, targetPort: 8081, protocol: UDP}
"#;
    c.k.run_stdin(&["apply", "-f", "-"], both_protocols).ok();
    let dual_ip = cluster_ip_of(&services, "dual").await;
    eventually(Duration::from_secs(60), "TCP and UDP on one port", || async {
        answers(SocketAddr::from((dual_ip, 8080)), 1).await?;
        udp_ask(SocketAddr::from((dual_ip, 8080)), "hostname").await
    })
    .await;
    let tcp_only = r#"{"spec": {"ports": [{"name": "tcp", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]}}"#;
    c.k.run(&["patch", "service", "dual", "--type=merge", "-p", tcp_only]).ok();
    eventually(Duration::from_secs(60), "UDP gone, TCP kept", || async {
        let udp = udp_ask(SocketAddr::from((dual_ip, 8080)), "hostname").await;
        (udp.is_none()).then_some(())?;
        answers(SocketAddr::from((dual_ip, 8080)), 1).await
    })
    .await;
    assert!(c.proxy.log().lines().all(|l| !l.contains("panicked")));
    c.k.run(&["delete", "service", "turn", "aff", "dual"]).ok();
    c.k.run(&["delete", "pod", "aff-a", "aff-b", "--wait=false"]).ok();
}

/// A DNS query for `name` of type `qtype` (1 A, 12 PTR, 33 SRV), sent over UDP to `server`:
/// (rcode, answer count, the first A record's address).
async fn dns_query(server: SocketAddr, name: &str, qtype: u16) -> Option<(u8, u16, Option<Ipv4Addr>)> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, (qtype >> 8) as u8, qtype as u8, 0, 1]);
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok()?;
    socket.send_to(&q, server).await.ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await.ok()?.ok()?;
    let r = &buf[..n];
    let rcode = r.get(3)? & 0x0f;
    let answers = u16::from_be_bytes([*r.get(6)?, *r.get(7)?]);
    // Skip the question, then read the first answer if it is an A record (names compressed).
    let mut i = 12;
    while *r.get(i)? != 0 {
        i += 1 + *r.get(i)? as usize;
    }
    i += 5;
    let mut a = None;
    if answers > 0 {
        while *r.get(i)? & 0xc0 != 0xc0 && *r.get(i)? != 0 {
            i += 1 + *r.get(i)? as usize;
        }
        i += if *r.get(i)? == 0 { 1 } else { 2 };
        let ty = u16::from_be_bytes([*r.get(i)?, *r.get(i + 1)?]);
        let len = u16::from_be_bytes([*r.get(i + 8)?, *r.get(i + 9)?]);
        if ty == 1 && len == 4 {
            a = Some(Ipv4Addr::new(*r.get(i + 10)?, *r.get(i + 11)?, *r.get(i + 12)?, *r.get(i + 13)?));
        }
    }
    Some((rcode, answers, a))
}

/// `nslookup` in a pod (its resolv.conf points at the cluster DNS): what it printed. Busybox's
/// nslookup tries every search domain and exits 1 if any of them fails, so the output, not the
/// exit code, tells.
fn nslookup(container: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("docker")
        .args(["exec", container, "timeout", "5", "nslookup"])
        .args(args)
        .output()
        .expect("docker exec");
    Some(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn c179_c180_c181_c182_c183_c184_c185_cluster_dns_answers_pods_and_the_node_for_every_record_type() {
    if !is_root() {
        println!("skipped: kube-proxy needs root to program iptables");
        return;
    }
    let mut c = ProxiedCluster::start().await;
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let objects = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: dns-a, namespace: default, labels: {{app: dnsweb}}}}
spec:
  nodeName: {node}
  hostname: dns-a
  subdomain: dnshl
  terminationGracePeriodSeconds: 1
  containers:
  - name: netexec
    image: netexec:1.2
    imagePullPolicy: IfNotPresent
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: dnsweb, namespace: default}}
spec:
  selector: {{app: dnsweb}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: dnshl, namespace: default}}
spec:
  clusterIP: None
  selector: {{app: dnsweb}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: alias, namespace: default}}
spec: {{type: ExternalName, externalName: dnsweb.default.svc.cluster.local}}
"#,
        node = c.node.name
    );
    c.k.run_stdin(&["apply", "-f", "-"], &objects).ok();
    let pod_ip = c.ready_ip("dns-a").await;
    let web_ip = cluster_ip_of(&services, "dnsweb").await;

    // The proxy publishes the kube-dns Service and its node's endpoint.
    let kube_system: Api<Service> = Api::namespaced(c.client.clone(), "kube-system");
    let dns_ip = eventually(Duration::from_secs(30), "the kube-dns Service", || async {
        kube_system.get("kube-dns").await.ok()?.spec?.cluster_ip
    })
    .await;
    assert_eq!(dns_ip, "10.96.0.10");
    let dns = SocketAddr::from(([10, 96, 0, 10], 53));

    // From the node, through the Service IP.
    let (rcode, _, a) = eventually(Duration::from_secs(60), "the node resolving through 10.96.0.10", || async {
        dns_query(dns, "dnsweb.default.svc.cluster.local", 1).await.filter(|r| r.2.is_some())
    })
    .await;
    assert_eq!((rcode, a), (0, Some(web_ip)), "{}", c.proxy.log());
    // The headless Service's endpoint (its slice may reach the records a sync later).
    eventually(Duration::from_secs(30), "the pod's hostname record", || async {
        let (_, _, a) = dns_query(dns, "dns-a.dnshl.default.svc.cluster.local", 1).await?;
        (a == Some(pod_ip)).then_some(())
    })
    .await;
    let (rcode, answers, _) = dns_query(dns, "nothing-here.default.svc.cluster.local", 1).await.expect("answer");
    assert_eq!((rcode, answers), (3, 0), "NXDOMAIN");

    // From a pod, with its resolv.conf (search path, ndots 5).
    let container = c.container("dns-a").await;
    let resolv = exec_in(&container, &["cat", "/etc/resolv.conf"]).expect("resolv.conf");
    assert!(
        resolv.contains("nameserver 10.96.0.10") && resolv.contains("search default.svc.cluster.local"),
        "{resolv}"
    );
    let has = |out: Option<String>, want: &str| out.is_some_and(|o| o.contains(want));
    // C184 / C179: the kubernetes Service by its full name.
    let address =
        |out: Option<String>, ip: &str| out.is_some_and(|o| o.lines().any(|l| l.trim() == format!("Address: {ip}")));
    assert!(address(nslookup(&container, &["kubernetes.default.svc.cluster.local"]), "10.96.0.1"));
    // C185: partial names through the search path.
    // (Busybox applies the search list to dotless names only; "dnsweb.default" resolves as its
    // expansion through the second search domain.)
    let short = nslookup(&container, &["dnsweb"]);
    assert!(has(short.clone(), &format!("Name:\tdnsweb.default.svc.cluster.local\nAddress: {web_ip}")), "{short:?}");
    assert!(address(nslookup(&container, &["dnsweb.default.svc.cluster.local"]), &web_ip.to_string()));
    // C183: SRV for a named port.
    let srv = nslookup(&container, &["-type=srv", "_http._tcp.dnsweb.default.svc.cluster.local"]);
    assert!(has(srv.clone(), "dnsweb.default.svc.cluster.local"), "{srv:?}");
    // C181 / C182: the pod's hostname in its subdomain (a headless Service), and the headless
    // Service's own name resolves to the ready pods.
    assert!(address(nslookup(&container, &["dns-a.dnshl.default.svc.cluster.local"]), &pod_ip.to_string()));
    assert!(address(nslookup(&container, &["dnshl.default.svc.cluster.local"]), &pod_ip.to_string()));
    // Pod A records by dashed address.
    let dashed = pod_ip.to_string().replace('.', "-");
    assert!(address(nslookup(&container, &[&format!("{dashed}.default.pod.cluster.local")]), &pod_ip.to_string()));
    // C180: an ExternalName is a CNAME to its name.
    let cname = nslookup(&container, &["-type=cname", "alias.default.svc.cluster.local"]);
    assert!(has(cname.clone(), "dnsweb.default.svc.cluster.local"), "{cname:?}");
    // PTR for a cluster IP.
    assert!(has(nslookup(&container, &[&web_ip.to_string()]), "dnsweb.default.svc.cluster.local"));
    // A name that does not exist fails.
    let none = nslookup(&container, &["nothing-here.default.svc.cluster.local"]).unwrap_or_default();
    assert!(none.contains("NXDOMAIN") && !none.contains("Name:\tnothing-here"), "{none}");

    // The DNS keeps answering from its cache while the apiserver is down.
    c.api.terminate();
    let (rcode, _, a) =
        dns_query(dns, "dnsweb.default.svc.cluster.local", 1).await.expect("an answer with the apiserver down");
    assert_eq!((rcode, a), (0, Some(web_ip)));
    assert!(address(nslookup(&container, &["dnsweb"]), &web_ip.to_string()));
}

#[tokio::test]
async fn a_pod_on_another_node_reaches_a_service_by_name_and_the_pods_behind_it_by_ip() {
    if !is_root() {
        println!("skipped: kube-proxy needs root to program iptables");
        return;
    }
    // Two nodes on this host (each its own pod /24 and Docker network); the proxy runs as the
    // first. Docker isolates its networks from each other: the proxy's FORWARD accept for the
    // cluster CIDR is what lets the second node's pod reach the first node's.
    let c = ProxiedCluster::start().await;
    let other = Kubelet::start(&c.api.endpoint, &[]).await;
    other.wait_ready(&c.client).await;
    assert_ne!(other.pod_cidr, c.node.pod_cidr);
    let objects = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: far-server, namespace: default, labels: {{app: far}}}}
spec:
  nodeName: {first}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: netexec, image: "netexec:1.2", imagePullPolicy: IfNotPresent, ports: [{{name: http, containerPort: 8080}}],
     readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: far-client, namespace: default}}
spec:
  nodeName: {second}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: netexec, image: "netexec:1.2", imagePullPolicy: IfNotPresent}}
---
apiVersion: v1
kind: Service
metadata: {{name: far, namespace: default}}
spec:
  selector: {{app: far}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#,
        first = c.node.name,
        second = other.name
    );
    c.k.run_stdin(&["apply", "-f", "-"], &objects).ok();
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let mut ips = Vec::new();
    for name in ["far-server", "far-client"] {
        let ip: Ipv4Addr = eventually(Duration::from_secs(90), &format!("{name} running"), || {
            let pods = pods.clone();
            async move {
                let s = pods.get(name).await.ok()?.status?;
                (s.phase.as_deref() == Some("Running")).then(|| s.pod_ip.clone()).flatten()?.parse().ok()
            }
        })
        .await;
        ips.push(ip);
    }
    let in_cidr = |ip: Ipv4Addr, cidr: &str| {
        cidr.starts_with(&format!("{}.{}.{}.", ip.octets()[0], ip.octets()[1], ip.octets()[2]))
    };
    assert!(in_cidr(ips[0], &c.node.pod_cidr) && in_cidr(ips[1], &other.pod_cidr), "{ips:?}");
    let client = c.container("far-client").await;
    // By pod IP across nodes, the server seeing the client's own pod IP.
    let seen = eventually(Duration::from_secs(60), "the server by pod IP from the other node", || {
        let client = client.clone();
        let url = format!("http://{}:8080/clientip", ips[0]);
        async move { exec_in(&client, &["timeout", "5", "wget", "-qO-", &url]) }
    })
    .await;
    assert_eq!(seen.rsplit_once(':').map(|(ip, _)| ip), Some(ips[1].to_string().as_str()), "pod IPs kept");
    // By the Service's name, through the cluster DNS and the Service's rules.
    let body =
        eventually(Duration::from_secs(60), "the Service by name from the other node", || {
            let client = client.clone();
            async move {
                exec_in(&client, &["timeout", "5", "wget", "-qO-", "http://far.default.svc.cluster.local/hostname"])
            }
        })
        .await;
    assert_eq!(body, "far-server", "{}", c.proxy.log());
    c.k.run(&["delete", "pod", "far-server", "far-client", "--wait=false"]).ok();
    c.k.run(&["delete", "service", "far"]).ok();
}

/// Readiness follows `/tmp/ready` in the pod (a test removes it to make the pod unready).
fn toggled_pod(name: &str, app: &str, node: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default, labels: {{app: {app}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: netexec
    image: netexec:1.2
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /tmp/ready; exec /netexec"]
    readinessProbe: {{exec: {{command: ["cat", "/tmp/ready"]}}, periodSeconds: 1, failureThreshold: 1}}
"#
    )
}

#[tokio::test]
async fn an_unready_endpoint_leaves_rotation_and_a_udp_flow_follows_a_replaced_endpoint() {
    if !is_root() {
        println!("skipped: kube-proxy needs root to program iptables");
        return;
    }
    let c = ProxiedCluster::start().await;
    let node = c.node.name.clone();
    let objects = format!(
        r#"{}---{}---
apiVersion: v1
kind: Service
metadata: {{name: rot, namespace: default}}
spec:
  selector: {{app: rot}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
  - {{name: udp, port: 81, targetPort: 8081, protocol: UDP}}
"#,
        toggled_pod("rot-a", "rot", &node),
        toggled_pod("rot-b", "rot", &node)
    );
    c.k.run_stdin(&["apply", "-f", "-"], &objects).ok();
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let ip = cluster_ip_of(&services, "rot").await;
    let who = |n: usize| async move {
        let mut seen = BTreeSet::new();
        for _ in 0..n {
            match http_get(SocketAddr::from((ip, 80)), "/hostname").await {
                Ok((200, body)) => {
                    seen.insert(body);
                }
                _ => return None,
            }
        }
        Some(seen)
    };
    eventually(Duration::from_secs(90), "both pods in rotation", || async { who(20).await.filter(|s| s.len() == 2) })
        .await;

    // rot-b turns unready (its probe fails): it leaves the rotation while still running.
    let b = c.container("rot-b").await;
    exec_in(&b, &["rm", "/tmp/ready"]).expect("make rot-b unready");
    let only_a =
        eventually(Duration::from_secs(30), "only rot-a", || async { who(20).await.filter(|s| s.len() == 1) }).await;
    assert_eq!(only_a, BTreeSet::from(["rot-a".to_string()]));
    // Ready again: back in rotation.
    exec_in(&b, &["touch", "/tmp/ready"]).expect("make rot-b ready");
    eventually(Duration::from_secs(30), "both again", || async { who(20).await.filter(|s| s.len() == 2) }).await;

    // A UDP flow (one client socket, so one conntrack entry) pinned to an endpoint follows the
    // Service when that endpoint goes: the proxy deletes the stale conntrack entry.
    exec_in(&b, &["rm", "/tmp/ready"]).expect("rot-b out");
    eventually(Duration::from_secs(30), "only rot-a for the flow", || async { who(10).await.filter(|s| s.len() == 1) })
        .await;
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.expect("udp");
    let ask = || async {
        socket.send_to(b"hostname", SocketAddr::from((ip, 81))).await.ok()?;
        let mut buf = [0u8; 256];
        let (n, _) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await.ok()?.ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let first = eventually(Duration::from_secs(30), "the UDP flow answered", &ask).await;
    assert_eq!(first, "rot-a");
    exec_in(&b, &["touch", "/tmp/ready"]).expect("rot-b back");
    c.k.run(&["delete", "pod", "rot-a", "--wait=false"]).ok();
    let next = eventually(Duration::from_secs(30), "the same flow answered by rot-b", || async {
        ask().await.filter(|h| h == "rot-b")
    })
    .await;
    assert_eq!(next, "rot-b", "{}", c.proxy.log());
    c.k.run(&["delete", "pod", "rot-b", "--wait=false"]).ok();
    c.k.run(&["delete", "service", "rot"]).ok();
}

#[tokio::test]
async fn c203_c206_services_turned_external_name_release_their_ip_and_node_port_and_resolve_as_the_name() {
    if !is_root() {
        println!("skipped: kube-proxy needs root to program iptables");
        return;
    }
    let c = ProxiedCluster::start().await;
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ext-client, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers: [{{name: netexec, image: "netexec:1.2", imagePullPolicy: IfNotPresent}}]
---
apiVersion: v1
kind: Service
metadata: {{name: was-cluster-ip, namespace: default}}
spec:
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: was-node-port, namespace: default}}
spec:
  type: NodePort
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
"#,
        node = c.node.name
    );
    c.k.run_stdin(&["apply", "-f", "-"], &pod).ok();
    let services: Api<Service> = Api::namespaced(c.client.clone(), "default");
    let old_ip = cluster_ip_of(&services, "was-cluster-ip").await;
    let np_spec = services.get("was-node-port").await.expect("svc").spec.expect("spec");
    let node_port = np_spec.ports.expect("ports")[0].node_port.expect("node port");
    // No endpoints: the rule for the address is the filter table's REJECT.
    eventually(Duration::from_secs(30), "the REJECT for the cluster IP", || async {
        iptables_save("filter").contains(&format!("-d {old_ip}/32")).then_some(())
    })
    .await;

    // As the upstream tests change them: type ExternalName, the cluster IP cleared.
    for name in ["was-cluster-ip", "was-node-port"] {
        let patch = r#"{"spec": {"type": "ExternalName", "externalName": "foo.example.invalid", "clusterIP": "", "clusterIPs": null}}"#;
        c.k.run(&["patch", "service", name, "--type=merge", "-p", patch]).ok();
        let spec = services.get(name).await.expect("svc").spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
        assert!(spec.cluster_ip.as_deref().unwrap_or("").is_empty(), "{name}: {:?}", spec.cluster_ip);
        let ports = spec.ports.unwrap_or_default();
        assert!(ports.iter().all(|p| p.node_port.is_none()), "{name}: {ports:?}");
    }
    // The address and the node port are free again: new Services can take them.
    let reuse = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: takes-the-ip, namespace: default}}
spec: {{clusterIP: "{old_ip}", selector: {{app: nobody}}, ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: takes-the-port, namespace: default}}
spec: {{type: NodePort, selector: {{app: nobody}}, ports: [{{port: 80, nodePort: {node_port}}}]}}
"#
    );
    c.k.run_stdin(&["apply", "-f", "-"], &reuse).ok();
    // Resolving an ExternalName Service gives its name.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    eventually(Duration::from_secs(90), "ext-client running", || async {
        (pods.get("ext-client").await.ok()?.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let client = c.container("ext-client").await;
    eventually(Duration::from_secs(60), "the ExternalName Services resolving as their name", || async {
        ["was-cluster-ip", "was-node-port"]
            .iter()
            .all(|name| {
                let out = nslookup(&client, &["-type=cname", &format!("{name}.default.svc.cluster.local")]);
                out.is_some_and(|o| o.contains("canonical name = foo.example.invalid"))
            })
            .then_some(())
    })
    .await;
    c.k.run(&["delete", "service", "was-cluster-ip", "was-node-port", "takes-the-ip", "takes-the-port"]).ok();
    c.k.run(&["delete", "pod", "ext-client", "--wait=false"]).ok();
}
