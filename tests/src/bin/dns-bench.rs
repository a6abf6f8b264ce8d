//! `dns-bench`: how many queries a second the cluster DNS answers from its records on one core,
//! next to the physical limit measured in the same run: a UDP echo server on one core under the
//! same client load (the socket round trip with no DNS work at all).
//!
//! 1. Records are built from `--services` (1,000) Services with 2 ready endpoints each.
//! 2. The server (kube-proxy's `dns::DnsServer`) runs on 127.0.0.1 in a single-threaded runtime
//!    on its own thread; the clients run on another thread: `--clients` (64) sockets, each
//!    sending an A query for a random Service and waiting for its answer, for `--seconds` (5).
//!    Every answer is checked (same id, NOERROR, one answer).
//! 3. The same clients against a one-thread UDP echo server give the ceiling.
//!
//! Run with a release build: `cargo build --release --bin dns-bench -p e2e && target/release/dns-bench`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_proxy::dns::{DnsServer, Records, SharedRecords, Upstream, Zone};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

struct Args {
    services: usize,
    clients: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args { services: 1000, clients: 64, seconds: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| {
                eprintln!("dns-bench: {arg} needs a number");
                std::process::exit(64)
            })
        };
        match arg.as_str() {
            "--services" => a.services = value() as usize,
            "--clients" => a.clients = value() as usize,
            "--seconds" => a.seconds = value(),
            other => {
                eprintln!("dns-bench: unknown argument {other}");
                std::process::exit(64);
            }
        }
    }
    a
}

fn objects(n: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut services = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("svc-{i}");
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        services.push(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "bench"},
                "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
            }))
            .expect("service"),
        );
        let eps: Vec<serde_json::Value> = (0..2)
            .map(|j| {
                serde_json::json!({"addresses": [format!("10.244.{}.{}", i / 120, (i % 120) * 2 + j + 1)],
                    "conditions": {"ready": true}})
            })
            .collect();
        slices.push(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{name}-abc"), "namespace": "bench",
                    "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "endpoints": eps,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
            }))
            .expect("slice"),
        );
    }
    (services, slices)
}

/// An A query with id `id` for `svc-<n>.bench.svc.cluster.local`.
fn query(id: u16, n: usize) -> Vec<u8> {
    let mut q = vec![(id >> 8) as u8, id as u8, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in format!("svc-{n}.bench.svc.cluster.local").split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Runs `clients` closed-loop clients against `server` for `seconds`; answers per second.
/// With `check`, every answer must be a NOERROR with one record and the query's id.
fn load(server: SocketAddr, clients: usize, services: usize, seconds: u64, check: bool) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
    rt.block_on(async move {
        let done = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (done, count, bad) = (done.clone(), count.clone(), bad.clone());
            tasks.push(tokio::spawn(async move {
                let socket = UdpSocket::bind("127.0.0.1:0").await.expect("client socket");
                socket.connect(server).await.expect("connect");
                let mut buf = [0u8; 1500];
                let mut i = c as u64;
                while !done.load(Ordering::Relaxed) {
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let id = (i >> 48) as u16;
                    let q = query(id, (i >> 16) as usize % services);
                    if socket.send(&q).await.is_err() {
                        continue;
                    }
                    match tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await {
                        Ok(Ok(n)) => {
                            let ok = !check
                                || (n > 12
                                    && buf[0..2] == q[0..2]
                                    && buf[3] & 0x0f == 0
                                    && u16::from_be_bytes([buf[6], buf[7]]) == 1);
                            if ok {
                                count.fetch_add(1, Ordering::Relaxed);
                            } else {
                                bad.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        done.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let bad = bad.load(Ordering::Relaxed);
        if bad > 0 {
            eprintln!("dns-bench: {bad} queries unanswered or wrong");
        }
        count.load(Ordering::Relaxed) as f64 / elapsed
    })
}

/// A server on its own thread with a one-thread runtime: "one core".
fn on_one_core<F, Fut>(f: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("server runtime");
        rt.block_on(f());
    })
}

fn main() {
    let a = args();
    let (services, slices) = objects(a.services);
    let built = Instant::now();
    let records = Records::build(&services, &slices, Zone::cluster_local());
    let build_time = built.elapsed();

    // The DNS server.
    let stop = CancellationToken::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let shared = SharedRecords::new(records);
    let server_stop = stop.clone();
    let dns = on_one_core(move || async move {
        let server = DnsServer::bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind the DNS server");
        let _ = tx.send(server.local_addr());
        let _ = server.run(shared, Upstream::new(Vec::new()), server_stop).await;
    });
    let dns_addr = rx.recv().expect("DNS address");
    let dns_qps = load(dns_addr, a.clients, a.services, a.seconds, true);
    stop.cancel();
    let _ = dns.join();

    // The ceiling: a UDP echo server on one core.
    let (tx, rx) = std::sync::mpsc::channel();
    let echo_stop = CancellationToken::new();
    let es = echo_stop.clone();
    let echo = on_one_core(move || async move {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("echo socket");
        let _ = tx.send(socket.local_addr().expect("addr"));
        let mut buf = [0u8; 1500];
        loop {
            tokio::select! {
                _ = es.cancelled() => return,
                r = socket.recv_from(&mut buf) => if let Ok((n, peer)) = r {
                    let _ = socket.send_to(&buf[..n], peer).await;
                }
            }
        }
    });
    let echo_addr = rx.recv().expect("echo address");
    let echo_qps = load(echo_addr, a.clients, a.services, a.seconds, false);
    echo_stop.cancel();
    let _ = echo.join();

    println!("cluster DNS on one core: {} Services x 2 endpoints, {} clients, {} s", a.services, a.clients, a.seconds);
    println!("  records built in             {:>10.1} ms", build_time.as_secs_f64() * 1000.0);
    println!("  DNS answers                  {dns_qps:>10.0} queries/s");
    println!("  UDP echo (the ceiling)       {echo_qps:>10.0} round trips/s");
    println!("  ratio DNS / echo             {:>10.2}", dns_qps / echo_qps.max(1.0));
    println!("  target >= 20,000 queries/s:  {}", if dns_qps >= 20_000.0 { "met" } else { "NOT met" });
}
