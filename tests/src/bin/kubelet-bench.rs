//! `kubelet-bench`: pod start latency through the whole stack next to the raw Docker sequence the
//! kubelet issues, in the same run on the same dockerd, plus the kubelet's footprint.
//!
//! 1. Raw Docker: pause container with an IP on a bridge network, then an app container joined to
//!    its network namespace; create + start both. Latency per pod, single (sequential) and in a
//!    batch of 20 started at once.
//! 2. The same through etcd + apiserver + kubelet: pods already bound (`spec.nodeName`), latency
//!    from the create request to the watch event that shows the pod Running with its container
//!    started (the client's clock: `creationTimestamp` has one-second resolution). Single and a
//!    batch of 20.
//! 3. With those 20 pods steady: the kubelet's RSS and CPU use over 30 s.
//!
//! Run with a release build: `cargo build --release --bins && target/release/kubelet-bench`.
//! Flags: `--single N` (sequential pods per side, default 10), `--batch N` (default 20),
//! `--steady SECS` (default 30).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig, NetworkCreateRequest,
    NetworkingConfig,
};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

use e2e::bench::{cpu_seconds, status_kib};
use e2e::etcd::Etcd;
use e2e::kubelet::Kubelet;
use e2e::server::Process;

struct Args {
    single: usize,
    batch: usize,
    steady: u64,
}

fn args() -> Args {
    let mut a = Args { single: 10, batch: 20, steady: 30 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} N"));
        match arg.as_str() {
            "--single" => a.single = num("--single") as usize,
            "--batch" => a.batch = num("--batch") as usize,
            "--steady" => a.steady = num("--steady"),
            other => {
                eprintln!("kubelet-bench: unknown argument {other}");
                std::process::exit(64);
            }
        }
    }
    a
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

const BENCH_NET: &str = "kbench-raw";
const BENCH_LABEL: &str = "rkube.bench";

/// One raw pod: what the kubelet's runtime does, minus the kubelet.
async fn raw_pod(docker: &Docker, n: usize) -> Duration {
    let start = Instant::now();
    let ip = format!("10.244.250.{}", 2 + n);
    let labels = HashMap::from([(BENCH_LABEL.to_string(), "1".to_string())]);
    let sandbox = ContainerCreateBody {
        image: Some("registry.k8s.io/pause:3.10".into()),
        hostname: Some(format!("raw-{n}")),
        labels: Some(labels.clone()),
        host_config: Some(HostConfig {
            network_mode: Some(BENCH_NET.into()),
            ipc_mode: Some("shareable".into()),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                BENCH_NET.to_string(),
                EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig { ipv4_address: Some(ip), ..Default::default() }),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    let sb = docker
        .create_container(
            Some(CreateContainerOptions { name: Some(format!("kbench_POD_{n}")), ..Default::default() }),
            sandbox,
        )
        .await
        .expect("create sandbox");
    docker.start_container(&sb.id, None).await.expect("start sandbox");
    let app = ContainerCreateBody {
        image: Some("busybox:latest".into()),
        cmd: Some(vec!["sleep".into(), "3600".into()]),
        labels: Some(labels),
        host_config: Some(HostConfig {
            network_mode: Some(format!("container:{}", sb.id)),
            ipc_mode: Some(format!("container:{}", sb.id)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = docker
        .create_container(
            Some(CreateContainerOptions { name: Some(format!("kbench_app_{n}")), ..Default::default() }),
            app,
        )
        .await
        .expect("create app");
    docker.start_container(&c.id, None).await.expect("start app");
    start.elapsed()
}

async fn raw_cleanup(docker: &Docker) {
    let filters = HashMap::from([("label".to_string(), vec![format!("{BENCH_LABEL}=1")])]);
    let list = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap_or_default();
    for c in list {
        if let Some(id) = c.id {
            let _ =
                docker.remove_container(&id, Some(RemoveContainerOptions { force: true, ..Default::default() })).await;
        }
    }
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": "1"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]
        }
    }))
    .expect("pod")
}

fn running(p: &Pod) -> bool {
    let st = p.status.as_ref();
    st.and_then(|s| s.phase.as_deref()) == Some("Running")
        && st
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| cs.iter().all(|c| c.state.as_ref().and_then(|s| s.running.as_ref()).is_some()))
}

/// Creates `names` at once and returns each one's latency to Running, seen by a watch.
async fn start_pods(api: &Api<Pod>, node: &str, names: &[String]) -> Vec<Duration> {
    let rv = api.list_metadata(&Default::default()).await.expect("list").metadata.resource_version.unwrap_or_default();
    let mut watch = api.watch(&WatchParams::default().labels("bench=1"), &rv).await.expect("watch").boxed();
    let mut created: HashMap<String, Instant> = HashMap::new();
    let creates = names.iter().map(|n| {
        let api = api.clone();
        let p = pod(n, node);
        async move {
            let at = Instant::now();
            api.create(&PostParams::default(), &p).await.expect("create pod");
            at
        }
    });
    let times = futures::future::join_all(creates).await;
    for (n, t) in names.iter().zip(times) {
        created.insert(n.clone(), t);
    }
    let mut done: HashMap<String, Duration> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.len() < names.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, watch.next()).await.expect("pods did not start in 120 s");
        let Some(Ok(WatchEvent::Modified(p) | WatchEvent::Added(p))) = ev else { continue };
        let name = p.metadata.name.clone().unwrap_or_default();
        if let Some(at) = created.get(&name)
            && running(&p)
            && !done.contains_key(&name)
        {
            done.insert(name, at.elapsed());
        }
    }
    done.into_values().collect()
}

#[tokio::main]
async fn main() {
    let a = args();
    let docker =
        Docker::connect_with_local_defaults().expect("docker").negotiate_version().await.expect("dockerd answers");
    raw_cleanup(&docker).await;
    let _ = docker.remove_network(BENCH_NET).await;
    docker
        .create_network(NetworkCreateRequest {
            name: BENCH_NET.into(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some("10.244.250.0/24".into()),
                    gateway: Some("10.244.250.1".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            options: Some(HashMap::from([
                ("com.docker.network.bridge.name".to_string(), "kbench0".to_string()),
                ("com.docker.network.bridge.enable_ip_masquerade".to_string(), "false".to_string()),
            ])),
            ..Default::default()
        })
        .await
        .expect("bench network");

    println!("== raw Docker: pause sandbox with an IP + app container joined to it");
    let mut raw_single = Vec::new();
    for i in 0..a.single {
        raw_single.push(raw_pod(&docker, i).await);
    }
    raw_cleanup(&docker).await;
    let batch = futures::future::join_all((0..a.batch).map(|i| raw_pod(&docker, 100 + i))).await;
    raw_cleanup(&docker).await;
    let _ = docker.remove_network(BENCH_NET).await;
    let (raw1, rawb) = (p50(raw_single), p50(batch));
    println!("   single p50 {}   batch of {} p50 {}", ms(raw1), a.batch, ms(rawb));

    println!("== etcd + apiserver + kubelet: bound pods, create -> Running seen by a watch");
    let etcd = Etcd::start().await;
    let apiserver = Process::start(&etcd.endpoint(), &[]).await;
    let client = apiserver.endpoint.kube_client().await;
    let kubelet = Kubelet::start(&apiserver.endpoint, &[]).await;
    kubelet.wait_ready(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut single = Vec::new();
    for i in 0..a.single {
        let name = format!("single-{i}");
        single.extend(start_pods(&pods, &kubelet.name, std::slice::from_ref(&name)).await);
        pods.delete(&name, &Default::default()).await.expect("delete");
    }
    // Let the deletions finish before the batch.
    for _ in 0..100 {
        if pods.list(&Default::default()).await.map(|l| l.items.is_empty()).unwrap_or(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let names: Vec<String> = (0..a.batch).map(|i| format!("batch-{i}")).collect();
    let batch = start_pods(&pods, &kubelet.name, &names).await;
    let (ours1, oursb) = (p50(single), p50(batch));
    println!("   single p50 {}   batch of {} p50 {}", ms(ours1), a.batch, ms(oursb));

    let pid = kubelet.pid().expect("kubelet pid");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t0 = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(a.steady)).await;
    let cpu = (cpu_seconds(pid) - t0) / a.steady as f64 * 100.0;
    let rss = status_kib(pid, "VmRSS:") as f64 / 1024.0;

    println!();
    println!(
        "pod start p50 ratio (ours / raw docker): single {:.2} (target <= 1.5), batch {:.2} (target <= 1.2)",
        ours1.as_secs_f64() / raw1.as_secs_f64(),
        oursb.as_secs_f64() / rawb.as_secs_f64()
    );
    println!(
        "kubelet with {} pods steady: RSS {rss:.1} MB (target < 50), CPU {cpu:.2}% of a core over {} s (target < 5)",
        a.batch, a.steady
    );
    drop(kubelet);
}
