//! `apiserver-bench`: the apiserver against the physical limit in the same run, on the same etcd,
//! from the same client process.
//!
//! 1. ConfigMap (1 KiB) creates/s and p50/p99 latency through the apiserver at concurrency 1, 16
//!    and 64, next to raw etcd puts of the same size.
//! 2. LIST of 10,000 pods through the apiserver next to a raw etcd range of the same keys.
//! 3. The apiserver's resident memory with those 10,000 pods stored.
//!
//! Run it with a release build (see the README): `cargo run --release -p e2e --bin apiserver-bench`.
//! Flags: `--ops N` (creates per concurrency level, default 2000), `--pods N` (default 10000),
//! `--tmpfs` (etcd data on /dev/shm instead of disk), `--hold SECS` (keep etcd and the apiserver up
//! that long after the pods phase, printing how to reach them, for profiling by hand),
//! `--only-creates C` (only the apiserver creates, at concurrency C, for profiling),
//! `--skip-creates` (only the pods and LIST phases), `--list-runs N` (default 15).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::json;

use e2e::bench::{cpu_seconds, drive, status_kib};
use e2e::etcd::Etcd;
use e2e::server::Process;

struct Args {
    ops: usize,
    pods: usize,
    tmpfs: bool,
    hold: u64,
    /// Run only the apiserver creates at this concurrency (for profiling).
    only: Option<usize>,
    /// LIST repetitions (median reported).
    list_runs: usize,
    /// Skip the ConfigMap create phase.
    skip_creates: bool,
}

fn args() -> Args {
    let mut a = Args { ops: 2000, pods: 10_000, tmpfs: false, hold: 0, only: None, list_runs: 15, skip_creates: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--ops" => a.ops = it.next().and_then(|v| v.parse().ok()).expect("--ops N"),
            "--pods" => a.pods = it.next().and_then(|v| v.parse().ok()).expect("--pods N"),
            "--tmpfs" => a.tmpfs = true,
            "--list-runs" => a.list_runs = it.next().and_then(|v| v.parse().ok()).expect("--list-runs N"),
            "--skip-creates" => a.skip_creates = true,
            "--only-creates" => a.only = it.next().and_then(|v| v.parse().ok()),
            "--hold" => a.hold = it.next().and_then(|v| v.parse().ok()).expect("--hold SECS"),
            other => {
                eprintln!("apiserver-bench: unknown argument {other}");
                std::process::exit(64);
            }
        }
    }
    a
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn stats(mut lat: Vec<Duration>, wall: Duration) -> Stats {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)].as_secs_f64() * 1000.0;
    Stats { per_sec: lat.len() as f64 / wall.as_secs_f64(), p50_ms: pick(0.50), p99_ms: pick(0.99) }
}

/// One HTTP/2 connection, shared by all workers, as client-go shares one per host.
#[derive(Clone)]
struct H2 {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    token: String,
    authority: String,
}

impl H2 {
    async fn connect(url: &str, ca_pem: &str, token: &str) -> H2 {
        use rustls::pki_types::pem::PemObject;
        let hostport = url.trim_start_matches("https://").to_string();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("ca");
        }
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("tls")
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(&hostport).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("127.0.0.1").expect("name"), tcp)
            .await
            .expect("handshake");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.expect("h2");
        tokio::spawn(conn);
        H2 { sender, token: token.to_string(), authority: hostport }
    }

    async fn send(&self, method: &str, path: &str, body: Bytes) -> (u16, Bytes) {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(body))
            .expect("request");
        let mut sender = self.sender.clone();
        sender.ready().await.expect("ready");
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        (status, resp.into_body().collect().await.expect("body").to_bytes())
    }
}

fn pod(i: usize) -> serde_json::Value {
    json!({
        "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": "bench", "shard": format!("s{}", i % 16)},
                     "annotations": {"bench/created-by": "apiserver-bench"}},
        "spec": {
            "nodeName": format!("node-{}", i % 100),
            "containers": [{
                "name": "app", "image": "registry.local/bench/app:1.0",
                "command": ["/bin/server", "--port=8080"],
                "env": [{"name": "MODE", "value": "bench"}, {"name": "INDEX", "value": i.to_string()}],
                "ports": [{"containerPort": 8080, "name": "http"}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 5}
            }]
        }
    })
}

/// User+system CPU time a process has used, in seconds.
#[tokio::main]
async fn main() {
    let a = args();
    let base = if a.tmpfs { None } else { Some(std::path::PathBuf::from("/var/tmp")) };
    let etcd = Etcd::start_in(base).await;
    let api = Process::start(&etcd.endpoint(), &[]).await;
    let h2 = H2::connect(&api.endpoint.url, &api.endpoint.ca_pem, &api.endpoint.token).await;
    let etcd_client = etcd.client().await;
    let value = Bytes::from(vec![b'x'; 1024]);

    println!(
        "apiserver-bench: {} creates per level, {} pods, etcd data on {}",
        a.ops,
        a.pods,
        if a.tmpfs { "tmpfs" } else { "disk (/var/tmp)" }
    );
    println!();
    let etcd_pid = etcd.pid().expect("etcd running");
    if let Some(concurrency) = a.only {
        let (code, _) =
            h2.send("POST", "/api/v1/namespaces", Bytes::from(json!({"metadata": {"name": "only"}}).to_string())).await;
        assert_eq!(code, 201);
        let h = h2.clone();
        let data = String::from_utf8(value.to_vec()).expect("ascii");
        let api_cpu0 = cpu_seconds(api.pid());
        let (lat, wall) = drive(concurrency, a.ops, move |i| {
            let h = h.clone();
            let body =
                Bytes::from(json!({"metadata": {"name": format!("cm-{i}")}, "data": {"payload": data}}).to_string());
            async move {
                let (code, _) = h.send("POST", "/api/v1/namespaces/only/configmaps", body).await;
                assert_eq!(code, 201);
            }
        })
        .await;
        let st = stats(lat, wall);
        let us = (cpu_seconds(api.pid()) - api_cpu0) * 1e6 / a.ops as f64;
        println!(
            "only creates at concurrency {concurrency}: {:.0}/s p50 {:.2} ms p99 {:.2} ms, apiserver CPU {us:.0} µs/create (pid {})",
            st.per_sec,
            st.p50_ms,
            st.p99_ms,
            api.pid()
        );
        return;
    }
    println!(
        "| concurrency | raw etcd puts/s | p50 ms | p99 ms | apiserver creates/s | p50 ms | p99 ms | ratio | raw create-if-absent txn/s | apiserver CPU µs/create | etcd CPU µs/op (put / txn / via apiserver) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    let levels: &[usize] = if a.skip_creates { &[] } else { &[1, 16, 64] };
    for &concurrency in levels {
        let client = etcd_client.clone();
        let v = value.clone();
        let etcd_cpu0 = cpu_seconds(etcd_pid);
        let (lat, wall) = drive(concurrency, a.ops, move |i| {
            let mut client = client.clone();
            let v = v.clone();
            async move {
                client.put(format!("/bench/raw/c{concurrency}/{i}"), v.to_vec(), None).await.expect("put");
            }
        })
        .await;
        let raw = stats(lat, wall);
        let etcd_raw_us = (cpu_seconds(etcd_pid) - etcd_cpu0) * 1e6 / a.ops as f64;
        // The same write as the apiserver makes it: a transaction that creates only if absent.
        let client = etcd_client.clone();
        let v = value.clone();
        let etcd_cpu0 = cpu_seconds(etcd_pid);
        let (lat, wall) = drive(concurrency, a.ops, move |i| {
            let mut client = client.clone();
            let v = v.clone();
            async move {
                let key = format!("/bench/txn/c{concurrency}/{i}");
                let txn = etcd_client::Txn::new()
                    .when([etcd_client::Compare::create_revision(key.clone(), etcd_client::CompareOp::Equal, 0)])
                    .and_then([etcd_client::TxnOp::put(key.clone(), v.to_vec(), None)])
                    .or_else([etcd_client::TxnOp::get(key, None)]);
                assert!(client.txn(txn).await.expect("txn").succeeded());
            }
        })
        .await;
        let txn = stats(lat, wall);
        let etcd_txn_us = (cpu_seconds(etcd_pid) - etcd_cpu0) * 1e6 / a.ops as f64;
        let ns = format!("bench-c{concurrency}");
        let (code, _) =
            h2.send("POST", "/api/v1/namespaces", Bytes::from(json!({"metadata": {"name": ns}}).to_string())).await;
        assert_eq!(code, 201);
        let h = h2.clone();
        let data = String::from_utf8(value.to_vec()).expect("ascii");
        let (api_cpu0, etcd_cpu0) = (cpu_seconds(api.pid()), cpu_seconds(etcd_pid));
        let (lat, wall) = drive(concurrency, a.ops, move |i| {
            let h = h.clone();
            let body =
                Bytes::from(json!({"metadata": {"name": format!("cm-{i}")}, "data": {"payload": data}}).to_string());
            let path = format!("/api/v1/namespaces/bench-c{concurrency}/configmaps");
            async move {
                let (code, body) = h.send("POST", &path, body).await;
                assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
            }
        })
        .await;
        let api_stats = stats(lat, wall);
        let api_us = (cpu_seconds(api.pid()) - api_cpu0) * 1e6 / a.ops as f64;
        let etcd_api_us = (cpu_seconds(etcd_pid) - etcd_cpu0) * 1e6 / a.ops as f64;
        let ratio = api_stats.per_sec / raw.per_sec;
        ratios.push((concurrency, ratio));
        println!(
            "| {concurrency} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {ratio:.2} | {:.0} | {api_us:.0} | {etcd_raw_us:.0} / {etcd_txn_us:.0} / {etcd_api_us:.0} |",
            raw.per_sec, raw.p50_ms, raw.p99_ms, api_stats.per_sec, api_stats.p50_ms, api_stats.p99_ms, txn.per_sec
        );
    }

    // 10,000 pods through the API (also a create rate for a realistic object).
    let (code, _) =
        h2.send("POST", "/api/v1/namespaces", Bytes::from(json!({"metadata": {"name": "bench"}}).to_string())).await;
    assert_eq!(code, 201);
    let h = h2.clone();
    let (_, wall) = drive(64, a.pods, move |i| {
        let h = h.clone();
        let body = Bytes::from(pod(i).to_string());
        async move {
            let (code, body) = h.send("POST", "/api/v1/namespaces/bench/pods", body).await;
            assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
        }
    })
    .await;
    println!();
    println!(
        "Created {} pods through the apiserver in {:.1} s ({:.0}/s at concurrency 64)",
        a.pods,
        wall.as_secs_f64(),
        a.pods as f64 / wall.as_secs_f64()
    );

    if a.hold > 0 {
        println!(
            "holding for {}s: apiserver {} (pid {}), token {}, kubeconfig {}, etcd {}",
            a.hold,
            api.endpoint.url,
            api.pid(),
            api.endpoint.token,
            api.endpoint.kubeconfig.display(),
            etcd.endpoint()
        );
        tokio::time::sleep(Duration::from_secs(a.hold)).await;
    }
    let mut api_times = Vec::new();
    let mut etcd_times = Vec::new();
    let mut api_bytes = 0;
    let mut etcd_bytes = 0;
    let mut kv = etcd_client.kv_client().max_decoding_message_size(usize::MAX);
    for _ in 0..a.list_runs {
        let t = Instant::now();
        let resp =
            kv.get("/registry/pods/bench/", Some(etcd_client::GetOptions::new().with_prefix())).await.expect("range");
        etcd_times.push(t.elapsed());
        assert_eq!(resp.kvs().len(), a.pods);
        etcd_bytes = resp.kvs().iter().map(|k| k.value().len()).sum::<usize>();
        let t = Instant::now();
        let (code, body) = h2.send("GET", "/api/v1/namespaces/bench/pods", Bytes::new()).await;
        api_times.push(t.elapsed());
        assert_eq!(code, 200);
        api_bytes = body.len();
    }
    api_times.sort();
    etcd_times.sort();
    let mid = a.list_runs / 2;
    let (api_med, etcd_med) = (api_times[mid].as_secs_f64() * 1000.0, etcd_times[mid].as_secs_f64() * 1000.0);
    let list_ratio = api_med / etcd_med;
    println!();
    println!("| LIST {} pods | median ms ({} runs, interleaved) | bytes |", a.pods, a.list_runs);
    println!("|---|---|---|");
    println!("| raw etcd range | {etcd_med:.1} | {etcd_bytes} |");
    println!("| apiserver GET (JSON) | {api_med:.1} | {api_bytes} |");
    println!("| ratio | {list_ratio:.2} | |");

    let (rss, hwm) = (status_kib(api.pid(), "VmRSS:"), status_kib(api.pid(), "VmHWM:"));
    println!();
    println!(
        "apiserver memory with {} pods stored: RSS {:.1} MB, peak {:.1} MB",
        a.pods,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!();
    let create_1 = ratios.iter().find(|(c, _)| *c == 1).map_or(0.0, |(_, r)| *r);
    let create_64 = ratios.iter().find(|(c, _)| *c == 64).map_or(0.0, |(_, r)| *r);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("targets: create ratio >= 0.5 at c=1: {create_1:.2} {}", verdict(create_1 >= 0.5));
    println!("         create ratio >= 0.3 at c=64: {create_64:.2} {}", verdict(create_64 >= 0.3));
    println!("         LIST ratio <= 1.5: {list_ratio:.2} {}", verdict(list_ratio <= 1.5));
    println!("         RSS < 150 MB: {:.1} MB {}", rss as f64 / 1024.0, verdict((rss as f64 / 1024.0) < 150.0));
}
