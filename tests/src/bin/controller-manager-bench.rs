//! `controller-manager-bench`: how fast the controller-manager turns a Deployment of 1,000
//! replicas into 1,000 pods, against the real apiserver and etcd, next to the raw etcd write
//! rate those pods need, measured in the same run; and its memory with 10,000 pods.
//!
//! 1. etcd (on disk) and the release apiserver start; the release controller-manager starts
//!    with every controller (`--leader-elect=false`). No kubelets or scheduler: pods stay
//!    Pending, so "status updated" means status.replicas and updatedReplicas reached the size.
//! 2. A Deployment of 1,000 replicas is created; a watch notes when each pod appears and when
//!    the Deployment's status shows them all.
//! 3. The physical limit: 1,000 etcd puts of a pod-sized value (1.5 KB), 32 in flight.
//! 4. The Deployment is scaled to 10,000 and the controller-manager's RSS read from /proc once
//!    its status shows them all.
//!
//! Run with a release build: `cargo build --release --bins && target/release/controller-manager-bench`.
//! Flags: `--replicas 1000`, `--scale-to 10000`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

use e2e::bench::{cpu_seconds, drive, status_kib};
use e2e::etcd::Etcd;
use e2e::server::Process;

fn args() -> (usize, usize) {
    let (mut replicas, mut scale_to) = (1000, 10_000);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{arg} needs a number"));
        match arg.as_str() {
            "--replicas" => replicas = value(),
            "--scale-to" => scale_to = value(),
            other => {
                eprintln!("controller-manager-bench: unknown argument {other}");
                std::process::exit(64);
            }
        }
    }
    (replicas, scale_to)
}

fn deployment(replicas: usize) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "bench"}},
            "template": {"metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
    }))
    .expect("deployment")
}

async fn raw_puts(etcd: &etcd_client::Client, n: usize) -> Duration {
    let value = std::sync::Arc::new(vec![b'x'; 1500]);
    let etcd = etcd.clone();
    let (_, wall) = drive(32, n, move |i| {
        let mut kv = etcd.kv_client();
        let value = value.clone();
        async move {
            kv.put(format!("/bench/raw/pods/{i}"), value.to_vec(), None).await.expect("put");
        }
    })
    .await;
    wall
}

/// Waits until the Deployment's status shows `n` replicas, all of the current template.
async fn status_shows(deployments: &Api<Deployment>, n: usize, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(d) = deployments.get("bench").await {
            let s = d.status.unwrap_or_default();
            if s.replicas == Some(n as i32) && s.updated_replicas == Some(n as i32) {
                return Some(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::main]
async fn main() {
    let (replicas, scale_to) = args();
    let etcd = Etcd::start_in(Some(std::path::PathBuf::from("/var/tmp"))).await;
    let server = Process::start(&etcd.endpoint(), &[]).await;
    let client = server.endpoint.kube_client().await;
    let etcd_client = etcd.client().await;
    let mut cm = e2e::child_command(e2e::binary("controller-manager"))
        .arg("--kubeconfig")
        .arg(&server.endpoint.kubeconfig)
        .arg("--leader-elect=false")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("controller-manager starts");
    let pid = cm.id();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_mb = status_kib(pid, "VmRSS:") as f64 / 1024.0;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mut events = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    loop {
        if let Some(Ok(watcher::Event::InitDone)) = events.next().await {
            break;
        }
    }
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    deployments.create(&PostParams::default(), &deployment(replicas)).await.expect("deployment");
    let mut seen = std::collections::HashSet::new();
    while seen.len() < replicas {
        match tokio::time::timeout(Duration::from_secs(60), events.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(p)))) => {
                seen.insert(p.metadata.name.unwrap_or_default());
            }
            Ok(Some(_)) => {}
            _ => panic!("no pod for 60 s ({} of {replicas})", seen.len()),
        }
    }
    let created = started.elapsed();
    let status =
        status_shows(&deployments, replicas, Duration::from_secs(120)).await.expect("status").duration_since(started);
    let cpu_ms_per_pod = (cpu_seconds(pid) - cpu_before) * 1000.0 / replicas as f64;
    drop(events);
    let raw = raw_puts(&etcd_client, replicas).await;

    let patch = serde_json::json!({"spec": {"replicas": scale_to}});
    deployments.patch("bench", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("scale");
    let scaled = status_shows(&deployments, scale_to, Duration::from_secs(900)).await.is_some();
    let rss_mb = status_kib(pid, "VmRSS:") as f64 / 1024.0;
    let peak_mb = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    let _ = cm.kill();
    let _ = cm.wait();

    println!("controller-manager-bench: a Deployment of {replicas} replicas, etcd data on disk (/var/tmp)");
    println!();
    println!("| measure | value | raw etcd: {replicas} puts, 32 in flight | ratio (raw / measured) |");
    println!("|---|---|---|---|");
    println!(
        "| create to {replicas} pods created | {:.2} s | {:.2} s | {:.2} |",
        created.as_secs_f64(),
        raw.as_secs_f64(),
        raw.as_secs_f64() / created.as_secs_f64()
    );
    println!("| create to status showing {replicas} | {:.2} s | | |", status.as_secs_f64());
    println!("| controller-manager CPU per pod | {cpu_ms_per_pod:.2} ms | | |");
    println!("| controller-manager RSS idle | {idle_mb:.1} MB | | |");
    if scaled {
        println!("| controller-manager RSS with {scale_to} pods (peak) | {rss_mb:.1} MB ({peak_mb:.1}) | | |");
    } else {
        println!("| controller-manager RSS with {scale_to} pods | not reached in 900 s | | |");
    }
}
