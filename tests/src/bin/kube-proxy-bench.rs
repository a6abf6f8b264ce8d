//! `kube-proxy-bench`: what kube-proxy's rule syncs cost next to the `iptables-restore` they
//! need, measured in the same run, for 1,000 and 10,000 Services x 2 endpoints.
//!
//! The Services are synthetic k8s-openapi objects: ClusterIP, one TCP port, 2 ready endpoints
//! (one on this node) in one EndpointSlice each, over 10 namespaces. TCP only, so a sync never
//! runs `conntrack` (which would act on the host's table); no health-check node ports either.
//!
//! Per Service count:
//! 1. The proxy's own overhead: `model::build` (objects to Service ports, as the sync loop does on
//!    every sync) and `rules::render`, and `rules::render_changed` for a one-endpoint change;
//!    medians of `--repeat` runs, no iptables involved.
//! 2. Full sync into a fresh network namespace: one raw `iptables-restore --noflush` of exactly
//!    the text the proxy emits (the physical limit), then, in a new fresh namespace, the proxy's
//!    own full sync: `model::build` + `Proxier::sync_proxy_rules(Full)`, the code path the
//!    running proxy takes (render, `iptables-save -t nat` for stale chains, the restore, the jump
//!    rules ensured with `iptables -C`/`-I`). Ratio = proxy / raw.
//! 3. Full resync on top of the same rules already in the kernel (the periodic
//!    `--iptables-sync-period` case): the raw restore again, and the proxy's full sync again.
//! 4. One endpoint of one Service replaced (a pod rescheduled): the raw restore of exactly the
//!    delta text (`render_changed`) on top of the old rules, then reverted, then the proxy's
//!    partial sync (`model::build` + `sync_proxy_rules(Partial)`: render, diff, restore of the
//!    same delta), then reverted; `--rounds` times, medians.
//!
//! All iptables work happens inside a network namespace this process creates
//! (`kpbench-<pid>`, via `ip netns exec`), deleted at the end, on error and on Ctrl-C/SIGTERM;
//! the host's tables are never touched and no packet is sent.
//!
//! Run as root with a release build:
//! `cargo build --release --bin kube-proxy-bench -p e2e && target/release/kube-proxy-bench`.
//! Flags: `--services 1000,10000`, `--repeat 5`, `--rounds 3`; `--render-only` for step 1 alone
//! (no iptables, no root).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Service, ServicePort as ApiServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_proxy::iptables::Iptables;
use kube_proxy::model::{self, SERVICE_NAME_LABEL};
use kube_proxy::proxier::Proxier;
use kube_proxy::rules::{self, Config, ForwardHook, NodeInfo, Rendered};
use kube_proxy::runner::SyncKind;
use kube_proxy::server::Metrics;
use tokio::io::AsyncWriteExt;

const NODE: &str = "bench-node";

struct Args {
    services: Vec<usize>,
    repeat: usize,
    rounds: usize,
    /// Only the render, diff and model-build timings: no namespace, no root needed.
    render_only: bool,
}

fn args() -> Args {
    let mut a = Args { services: vec![1000, 10_000], repeat: 5, rounds: 3, render_only: false };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        let number = |v: String| v.parse::<usize>().ok().filter(|n| *n > 0).unwrap_or_else(|| usage(&arg));
        match arg.as_str() {
            "--services" => a.services = value().split(',').map(|n| number(n.to_string())).collect(),
            "--repeat" => a.repeat = number(value()),
            "--rounds" => a.rounds = number(value()),
            "--render-only" => a.render_only = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    a
}

fn usage(problem: &str) -> ! {
    eprintln!("kube-proxy-bench: {problem} (flags: --services N,N --repeat N --rounds N --render-only)");
    std::process::exit(64);
}

/// One line saying why this machine cannot run the benchmark, if it cannot.
fn cannot_run() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("must run as root (it creates a network namespace)".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["ip", "iptables", "iptables-restore", "iptables-save"] {
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
            return Some(format!("{tool} not found on PATH"));
        }
    }
    None
}

/// A network namespace of this process; deleted when dropped (also on error and Ctrl-C, as the
/// benchmark future is dropped then).
struct Netns(String);

impl Netns {
    fn create(name: &str) -> anyhow::Result<Netns> {
        ip(&["netns", "add", name]).with_context(|| format!("creating network namespace {name}"))?;
        Ok(Netns(name.to_string()))
    }

    /// Deletes and creates it again: empty tables.
    fn recreate(&self) -> anyhow::Result<()> {
        ip(&["netns", "delete", &self.0])?;
        ip(&["netns", "add", &self.0])
    }

    /// One plain `iptables-restore --noflush` of `text` inside the namespace: the physical limit.
    async fn raw_restore(&self, text: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.0, "iptables-restore", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running iptables-restore")?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(text.as_bytes()).await.context("writing to iptables-restore")?;
        }
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!("iptables-restore failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(started.elapsed())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "delete", &self.0]) {
            eprintln!("kube-proxy-bench: could not delete network namespace {}: {e}", self.0);
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip").args(args).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn service(i: usize) -> Service {
    let cluster_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32);
    Service {
        metadata: ObjectMeta {
            namespace: Some(format!("bench-{}", i % 10)),
            name: Some(format!("svc-{i:05}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(cluster_ip.to_string()),
            cluster_ips: Some(vec![cluster_ip.to_string()]),
            ports: Some(vec![ApiServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Endpoint `j` (0 or 1) of Service `i`: 10.244.0.0/16, distinct for up to 32,767 Services.
fn endpoint_ip(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 1)) + (2 * i + j) as u32)
}

fn slice(i: usize, ips: [Ipv4Addr; 2]) -> EndpointSlice {
    let endpoint = |ip: Ipv4Addr, node: &str| Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions { ready: Some(true), serving: Some(true), terminating: Some(false) }),
        node_name: Some(node.into()),
        ..Default::default()
    };
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(format!("bench-{}", i % 10)),
            name: Some(format!("svc-{i:05}-abcde")),
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), format!("svc-{i:05}"))])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![endpoint(ips[0], NODE), endpoint(ips[1], "other-node")],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn config() -> Config {
    // No dockerd in the namespace: hook the FORWARD-path chains from FORWARD itself.
    Config { cluster_cidr: "10.244.0.0/16".parse().ok(), forward_hook: ForwardHook::Forward, ..Config::default() }
}

fn node() -> NodeInfo {
    NodeInfo { name: NODE.into(), addresses: vec![Ipv4Addr::new(192, 168, 1, 10)] }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Progress on stderr, with the time since the start.
fn progress(start: Instant, what: &str) {
    eprintln!("[{:7.1} s] {what}", start.elapsed().as_secs_f64());
}

#[derive(Default)]
struct Figures {
    services: usize,
    nat_chains: usize,
    rules: usize,
    full_bytes: usize,
    build: Duration,
    render: Duration,
    diff: Duration,
    raw_fresh: Duration,
    proxy_fresh: Duration,
    raw_resync: Duration,
    proxy_resync: Duration,
    save: Duration,
    jumps: Duration,
    delta_bytes: usize,
    raw_delta: Duration,
    proxy_delta: Duration,
}

async fn measure(n: usize, a: &Args, ns: Option<&Netns>, start: Instant) -> anyhow::Result<Figures> {
    let services: Vec<Service> = (0..n).map(service).collect();
    let slices: Vec<EndpointSlice> = (0..n).map(|i| slice(i, [endpoint_ip(i, 0), endpoint_ip(i, 1)])).collect();
    // The change: the remote endpoint of the middle Service is replaced by a new pod.
    let changed = n / 2;
    let mut slices_changed = slices.clone();
    slices_changed[changed] = slice(changed, [endpoint_ip(changed, 0), Ipv4Addr::new(10, 244, 250, 1)]);
    let (cfg, node) = (config(), node());

    // 1. The proxy's own overhead, no iptables.
    progress(start, &format!("{n} Services: timing model build, render and diff"));
    let (mut builds, mut renders, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    let mut prev = None;
    let mut next = None;
    for _ in 0..a.repeat {
        let t = Instant::now();
        let ports = model::build(&services, &slices);
        builds.push(t.elapsed());
        let t = Instant::now();
        let r = rules::render(&ports, &node, &cfg);
        renders.push(t.elapsed());
        let r2 = rules::render(&model::build(&services, &slices_changed), &node, &cfg);
        let t = Instant::now();
        let delta = rules::render_changed(&r, &r2);
        diffs.push(t.elapsed());
        std::hint::black_box(delta);
        (prev, next) = (Some(r), Some(r2));
    }
    let (prev, next): (Rendered, Rendered) = (prev.context("rendered")?, next.context("rendered")?);
    let full_text = rules::full_sync_text(&prev, &[]);
    let delta_text = rules::render_changed(&prev, &next);
    let revert_text = rules::render_changed(&next, &prev);
    let nat_chains = prev.nat.chains.len();
    let rule_count: usize = prev.nat.chains.iter().chain(&prev.filter.chains).map(|c| c.rules.len()).sum();
    let overhead = Figures {
        services: n,
        nat_chains,
        rules: rule_count,
        full_bytes: full_text.len(),
        build: median(builds),
        render: median(renders),
        diff: median(diffs),
        delta_bytes: delta_text.len(),
        ..Figures::default()
    };
    let Some(ns) = ns else { return Ok(overhead) };

    // 2. Full sync into a fresh namespace.
    ns.recreate()?;
    progress(start, &format!("{n} Services: raw iptables-restore of the full text ({} bytes)", full_text.len()));
    let raw_fresh = ns.raw_restore(&full_text).await?;
    progress(start, &format!("{n} Services: raw restore again on top of the same rules"));
    let raw_resync = ns.raw_restore(&full_text).await?;
    ns.recreate()?;
    let ipt = Iptables::in_netns(&ns.0);
    let mut proxier = Proxier::new(cfg.clone(), ipt.clone(), Arc::new(Metrics::new(Duration::from_secs(30))));
    progress(start, &format!("{n} Services: proxy full sync into a fresh namespace"));
    let t = Instant::now();
    let ports = model::build(&services, &slices);
    proxier.sync_proxy_rules(ports, &node, SyncKind::Full).await.context("proxy full sync")?;
    let proxy_fresh = t.elapsed();

    // 3. Full resync on top of the same rules.
    progress(start, &format!("{n} Services: proxy full sync on top of the same rules"));
    let t = Instant::now();
    let ports = model::build(&services, &slices);
    proxier.sync_proxy_rules(ports, &node, SyncKind::Full).await.context("proxy full resync")?;
    let proxy_resync = t.elapsed();
    // Where a full sync's time goes besides render and restore.
    let t = Instant::now();
    ipt.save("nat").await?;
    let save = t.elapsed();
    let t = Instant::now();
    ipt.ensure_jumps(&rules::jump_rules(&cfg)).await?;
    let jumps = t.elapsed();

    // 4. One endpoint changed, on top of the old rules.
    let (mut raw_deltas, mut proxy_deltas) = (Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        progress(start, &format!("{n} Services: one-endpoint change, round {round} of {}", a.rounds));
        raw_deltas.push(ns.raw_restore(&delta_text).await?);
        ns.raw_restore(&revert_text).await?;
        let t = Instant::now();
        let ports = model::build(&services, &slices_changed);
        proxier.sync_proxy_rules(ports, &node, SyncKind::Partial).await.context("proxy partial sync")?;
        proxy_deltas.push(t.elapsed());
        proxier.sync_proxy_rules(model::build(&services, &slices), &node, SyncKind::Partial).await?;
    }
    proxier.stop();

    Ok(Figures {
        raw_fresh,
        proxy_fresh,
        raw_resync,
        proxy_resync,
        save,
        jumps,
        raw_delta: median(raw_deltas),
        proxy_delta: median(proxy_deltas),
        ..overhead
    })
}

fn report(all: &[Figures], render_only: bool) {
    println!();
    println!("| Services | nat chains | rules | full text | model build | render | diff (1 change) |");
    println!("|---|---|---|---|---|---|---|");
    for f in all {
        println!(
            "| {} | {} | {} | {:.1} MB | {:.1} ms | {:.1} ms | {:.1} ms |",
            f.services,
            f.nat_chains,
            f.rules,
            f.full_bytes as f64 / 1e6,
            ms(f.build),
            ms(f.render),
            ms(f.diff)
        );
    }
    if render_only {
        return;
    }
    println!();
    println!(
        "| Services | full sync | raw iptables-restore | proxy (build + sync_proxy_rules) | **ratio** (target <= 1.3) | of which iptables-save -t nat / jump checks |"
    );
    println!("|---|---|---|---|---|---|");
    for f in all {
        for (case, raw, proxy) in [
            ("into empty tables", f.raw_fresh, f.proxy_fresh),
            ("on top of the same rules", f.raw_resync, f.proxy_resync),
        ] {
            println!(
                "| {} | {case} | {:.2} s | {:.2} s | **{:.2}** | {:.2} s / {:.2} s |",
                f.services,
                raw.as_secs_f64(),
                proxy.as_secs_f64(),
                proxy.as_secs_f64() / raw.as_secs_f64(),
                f.save.as_secs_f64(),
                f.jumps.as_secs_f64()
            );
        }
    }
    println!();
    println!(
        "| Services | one-endpoint change: delta text | raw restore of the delta | proxy partial sync (build + render + diff + restore) | ratio | target |"
    );
    println!("|---|---|---|---|---|---|");
    for f in all {
        println!(
            "| {} | {} bytes | {:.0} ms | **{:.0} ms** | {:.2} | < 1000 ms: {} |",
            f.services,
            f.delta_bytes,
            ms(f.raw_delta),
            ms(f.proxy_delta),
            f.proxy_delta.as_secs_f64() / f.raw_delta.as_secs_f64(),
            if f.proxy_delta < Duration::from_secs(1) { "met" } else { "MISSED" }
        );
    }
}

async fn run(a: &Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let ns = match a.render_only {
        true => None,
        false => Some(Netns::create(&format!("kpbench-{}", std::process::id()))?),
    };
    if let Some(ns) = &ns {
        progress(start, &format!("Created network namespace {}", ns.0));
    }
    let mut all = Vec::new();
    for &n in &a.services {
        all.push(measure(n, a, ns.as_ref(), start).await?);
    }
    progress(start, "Done");
    report(&all, a.render_only);
    Ok(())
}

#[tokio::main]
async fn main() {
    let a = args();
    if let Some(reason) = cannot_run().filter(|_| !a.render_only) {
        eprintln!("kube-proxy-bench: {reason}");
        std::process::exit(1);
    }
    println!(
        "kube-proxy-bench: {:?} Services x 2 endpoints, {} render runs, {} change rounds, iptables: {}",
        a.services,
        a.repeat,
        a.rounds,
        iptables_version()
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-proxy-bench: cannot watch SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    // Dropping `run` on a signal drops its namespace guard, which deletes the namespace.
    let result = tokio::select! {
        r = run(&a) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    };
    if let Err(e) = result {
        eprintln!("kube-proxy-bench: {e:#}");
        std::process::exit(1);
    }
}

fn iptables_version() -> String {
    std::process::Command::new("iptables")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
