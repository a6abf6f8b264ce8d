//! `scheduler-bench`: pods scheduled per second by the scheduler binary against the real
//! apiserver and etcd, on 100, 1,000 and 5,000 simulated nodes (Node objects only, no kubelets),
//! next to the raw etcd write rate the bindings need, measured in the same run.
//!
//! For each node count and workload (basic; topology spread over 10 zones; required pod
//! anti-affinity per hostname, only where there are at least as many nodes as pods):
//! 1. 1,000 pending pods are created for a scheduler name nobody serves yet.
//! 2. The scheduler starts (`--leader-elect=false`); a watch records when each pod is seen bound.
//!    Rate = bindings / (last binding seen - first binding seen), so start-up (listing the nodes
//!    and pods) is not counted; it is reported on its own.
//! 3. The scheduler's peak RSS (VmHWM) and CPU are read from /proc before it is stopped.
//!
//! The physical limit: a binding is one read-check-write of the pod in etcd. The raw figure is
//! that transaction (compare the key's mod revision, put a pod-sized value) done for 1,000 keys
//! with as many in flight as the scheduler binds at once (32).
//!
//! Run with a release build: `cargo build --release --bins && target/release/scheduler-bench`.
//! Flags: `--nodes 100,1000,5000`, `--pods 1000`, `--workloads basic,spread,anti`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;

use e2e::bench::{cpu_seconds, drive, status_kib};
use e2e::etcd::Etcd;
use e2e::server::Process;

struct Args {
    nodes: Vec<usize>,
    pods: usize,
    workloads: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        nodes: vec![100, 1000, 5000],
        pods: 1000,
        workloads: vec!["basic".into(), "spread".into(), "anti".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--nodes" => a.nodes = value().split(',').map(|n| n.parse().expect("--nodes N,N")).collect(),
            "--pods" => a.pods = value().parse().expect("--pods N"),
            "--workloads" => a.workloads = value().split(',').map(String::from).collect(),
            other => {
                eprintln!("scheduler-bench: unknown argument {other}");
                std::process::exit(64);
            }
        }
    }
    a
}

fn node(i: usize) -> Node {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("sim-{i:05}"), "labels": {
            "kubernetes.io/hostname": format!("sim-{i:05}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % 10)}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("node")
}

fn pod(i: usize, workload: &str, scheduler: &str) -> Pod {
    let mut spec = serde_json::json!({
        "schedulerName": scheduler,
        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]
    });
    let selector = serde_json::json!({"matchLabels": {"app": "bench"}});
    match workload {
        "spread" => {
            spec["topologySpreadConstraints"] = serde_json::json!([{"maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": selector}]);
        }
        "anti" => {
            spec["affinity"] = serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": selector, "topologyKey": "kubernetes.io/hostname"}]}});
        }
        _ => {}
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("p-{i:05}"), "labels": {"app": "bench"}}, "spec": spec
    }))
    .expect("pod")
}

/// The bindings' physical limit: a compare-and-put of a pod-sized value per pod, 32 in flight.
async fn raw_bindings(etcd: &etcd_client::Client, pods: usize, round: &str) -> f64 {
    let value = Arc::new(vec![b'x'; 1500]);
    let mut kv = etcd.kv_client();
    for i in 0..pods {
        kv.put(format!("/bench/raw/{round}/{i}"), value.to_vec(), None).await.expect("seed");
    }
    let etcd = etcd.clone();
    let round = round.to_string();
    let (_, wall) = drive(32, pods, move |i| {
        let mut kv = etcd.kv_client();
        let value = value.clone();
        let key = format!("/bench/raw/{round}/{i}");
        async move {
            let got = kv.get(key.clone(), None).await.expect("get");
            let rev = got.kvs().first().map(|k| k.mod_revision()).unwrap_or(0);
            let txn = etcd_client::Txn::new()
                .when([etcd_client::Compare::mod_revision(key.clone(), etcd_client::CompareOp::Equal, rev)])
                .and_then([etcd_client::TxnOp::put(key, value.to_vec(), None)]);
            assert!(kv.txn(txn).await.expect("txn").succeeded());
        }
    })
    .await;
    pods as f64 / wall.as_secs_f64()
}

struct Outcome {
    per_sec: f64,
    startup: Duration,
    rss_mb: f64,
    cpu_ms_per_pod: f64,
}

async fn run_round(
    client: &kube::Client,
    kubeconfig: &std::path::Path,
    ns: &str,
    workload: &str,
    pods: usize,
) -> Outcome {
    let scheduler = format!("bench-{ns}");
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(ns.into());
    namespaces.create(&PostParams::default(), &n).await.expect("namespace");
    let (api2, wl, sch) = (api.clone(), workload.to_string(), scheduler.clone());
    drive(32, pods, move |i| {
        let api = api2.clone();
        let p = pod(i, &wl, &sch);
        async move {
            api.create(&PostParams::default(), &p).await.expect("create pod");
        }
    })
    .await;
    // Watch bindings before the scheduler starts.
    let mut bound_at: HashMap<String, Instant> = HashMap::new();
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    loop {
        if let Some(Ok(watcher::Event::InitDone)) = events.next().await {
            break;
        }
    }
    let started = Instant::now();
    let mut child = e2e::child_command(e2e::binary("scheduler"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--leader-elect=false", "--scheduler-name", &scheduler])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("scheduler starts");
    let pid = child.id();
    let deadline = started + Duration::from_secs(600);
    while bound_at.len() < pods && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(p)))) => {
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    bound_at.entry(p.metadata.name.clone().unwrap_or_default()).or_insert_with(Instant::now);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                eprintln!("no binding for 30 s ({} of {pods} bound)", bound_at.len());
                break;
            }
        }
    }
    let rss_mb = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    let cpu = cpu_seconds(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(bound_at.len(), pods, "every pod bound");
    let first = bound_at.values().min().copied().unwrap_or(started);
    let last = bound_at.values().max().copied().unwrap_or(started);
    let per_sec = (pods - 1) as f64 / last.duration_since(first).as_secs_f64().max(1e-6);
    // Clean up: no kubelet will finish these, so delete them at once.
    let _ = api
        .delete_collection(
            &DeleteParams { grace_period_seconds: Some(0), ..Default::default() },
            &ListParams::default(),
        )
        .await;
    Outcome { per_sec, startup: first.duration_since(started), rss_mb, cpu_ms_per_pod: cpu * 1000.0 / pods as f64 }
}

#[tokio::main]
async fn main() {
    let a = args();
    let etcd = Etcd::start_in(Some(std::path::PathBuf::from("/var/tmp"))).await;
    let server = Process::start(&etcd.endpoint(), &[]).await;
    let client = server.endpoint.kube_client().await;
    let etcd_client = etcd.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    println!("scheduler-bench: {} pods per round, etcd data on disk (/var/tmp)", a.pods);
    println!();
    println!(
        "| nodes | workload | pods/s | raw etcd bindings/s | ratio | start-up to first binding | scheduler peak RSS MB | scheduler CPU ms/pod |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut have = 0;
    for (round, &count) in a.nodes.iter().enumerate() {
        let api = nodes.clone();
        let from = have;
        drive(32, count.saturating_sub(have), move |i| {
            let api = api.clone();
            let n = node(from + i);
            async move {
                api.create(&PostParams::default(), &n).await.expect("create node");
            }
        })
        .await;
        have = have.max(count);
        for workload in &a.workloads {
            if workload == "anti" && count < a.pods {
                println!("| {count} | anti | - | - | - | (needs at least as many nodes as pods) | - | - |");
                continue;
            }
            let ns = format!("r{round}-{workload}");
            let raw = raw_bindings(&etcd_client, a.pods, &ns).await;
            let o = run_round(&client, &server.endpoint.kubeconfig, &ns, workload, a.pods).await;
            println!(
                "| {count} | {workload} | {:.0} | {raw:.0} | {:.2} | {:.2} s | {:.1} | {:.2} |",
                o.per_sec,
                o.per_sec / raw,
                o.startup.as_secs_f64(),
                o.rss_mb,
                o.cpu_ms_per_pod
            );
        }
    }
}
