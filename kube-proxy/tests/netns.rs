//! Applies rendered rules with the real `iptables-restore` inside a network namespace made by the
//! test, so the host's own tables are never touched. Skips (with a printed reason) when not root
//! or when `ip`/`iptables-restore` are missing.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{Service, ServicePort as ApiServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_proxy::model::{SERVICE_NAME_LABEL, build};
use kube_proxy::rules::{Config, ForwardHook, NodeInfo, Rendered, jump_rules, render, render_changed, stale_chains};

/// Deletes the namespace when dropped, also when an assertion failed.
struct Netns(String);

impl Netns {
    fn create() -> Result<Netns, String> {
        let name = format!("kp-test-{}", std::process::id());
        run("ip", &["netns", "add", &name], None)?;
        Ok(Netns(name))
    }

    fn exec(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut full = vec!["netns", "exec", self.0.as_str()];
        full.extend_from_slice(args);
        run("ip", &full, stdin)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "delete", &self.0], None);
    }
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| format!("{cmd} stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn skip_reason() -> Option<String> {
    let uid = run("id", &["-u"], None).unwrap_or_default();
    if uid.trim() != "0" {
        return Some("not running as root".into());
    }
    for tool in ["ip", "iptables-restore", "iptables-save"] {
        if run("sh", &["-c", &format!("command -v {tool}")], None).is_err() {
            return Some(format!("{tool} not found"));
        }
    }
    None
}

fn service(name: &str, ip: &str, node_port: Option<i32>) -> Service {
    Service {
        metadata: ObjectMeta { namespace: Some("ns1".into()), name: Some(name.into()), ..Default::default() },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip.into()),
            type_: Some(if node_port.is_some() { "NodePort" } else { "ClusterIP" }.into()),
            ports: Some(vec![ApiServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                node_port,
                ..Default::default()
            }]),
            session_affinity: Some("ClientIP".into()),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(service: &str, ips: &[&str]) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("ns1".into()),
            name: Some(format!("{service}-1")),
            labels: Some(BTreeMap::from([(SERVICE_NAME_LABEL.to_string(), service.to_string())])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.to_string()],
                node_name: Some("node-a".into()),
                ..Default::default()
            })
            .collect(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    }
}

fn rendered(services: &[Service], slices: &[EndpointSlice]) -> Rendered {
    let node = NodeInfo { name: "node-a".into(), addresses: vec![Ipv4Addr::new(192, 168, 1, 10)] };
    let cfg = Config { cluster_cidr: "10.244.0.0/16".parse().ok(), ..Config::default() };
    render(&build(services, slices), &node, &cfg)
}

/// The chain names `iptables-save` lists for `table` inside the namespace.
fn saved_chains(ns: &Netns, table: &str) -> Result<Vec<String>, String> {
    let saved = ns.exec(&["iptables-save", "-t", table], None)?;
    Ok(saved
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split(' ').next())
        .map(String::from)
        .collect())
}

#[test]
fn rendered_rules_apply_and_stale_chains_are_removed_in_a_namespace() -> Result<(), String> {
    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return Ok(());
    }
    let ns = Netns::create()?;

    let services = [
        service("a", "10.96.0.10", Some(30080)),
        service("b", "10.96.0.11", None),
        service("empty", "10.96.0.12", Some(30081)),
    ];
    let slices = [slice("a", &["10.244.0.2", "10.244.0.3"]), slice("b", &["10.244.0.4"])];
    let first = rendered(&services, &slices);
    ns.exec(&["iptables-restore", "--noflush"], Some(&first.text))?;

    let nat = saved_chains(&ns, "nat")?;
    for chain in first.nat.chain_names() {
        assert!(nat.contains(&chain), "nat chain {chain} missing after restore: {nat:?}");
    }
    let filter = saved_chains(&ns, "filter")?;
    for chain in first.filter.chain_names() {
        assert!(filter.contains(&chain), "filter chain {chain} missing after restore: {filter:?}");
    }
    let saved = ns.exec(&["iptables-save"], None)?;
    assert!(saved.contains("--comment \"ns1/empty:http has no endpoints\""), "{saved}");
    assert!(saved.contains("MASQUERADE --random-fully"), "{saved}");

    // The jumps from the built-in chains are accepted by iptables as the runner will send them
    // (no DOCKER-USER chain in a fresh namespace, so hook FORWARD directly).
    let cfg = Config { forward_hook: ForwardHook::Forward, ..Config::default() };
    for jump in jump_rules(&cfg).iter().rev() {
        let mut args = vec!["iptables", "-t", jump.table, "-I", jump.chain, "1"];
        args.extend(jump.args.iter().map(String::as_str));
        ns.exec(&args, None)?;
        args[3] = "-C";
        args.remove(5);
        ns.exec(&args, None)?;
    }
    let saved = ns.exec(&["iptables-save", "-t", "nat"], None)?;
    assert!(
        saved.contains("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        "{saved}"
    );

    // Service "a" goes away; only the changed chains and the deletions are sent.
    let second = rendered(&services[1..], &slices[1..]);
    let delta = render_changed(&first, &second);
    let names = first.nat.chain_names();
    let stale = stale_chains(names.iter().map(String::as_str), &second);
    assert_eq!(stale.len(), 4, "a's SVC, EXT and two SEP chains: {stale:?}");
    ns.exec(&["iptables-restore", "--noflush"], Some(&delta))?;

    let nat = saved_chains(&ns, "nat")?;
    for chain in &stale {
        assert!(!nat.contains(chain), "stale chain {chain} still present: {nat:?}");
    }
    for chain in second.nat.chain_names() {
        assert!(nat.contains(&chain), "nat chain {chain} missing after partial restore: {nat:?}");
    }
    // What the kernel holds now equals a full render of the second state, rule for rule.
    let saved = ns.exec(&["iptables-save", "-t", "nat"], None)?;
    let rules = saved.lines().filter(|l| l.starts_with("-A KUBE-")).count();
    let want = second.nat.chains.iter().map(|c| c.rules.len()).sum::<usize>();
    assert_eq!(rules, want, "{saved}");

    // Re-applying the same state sends nothing.
    assert_eq!(render_changed(&second, &second), "");
    Ok(())
}

/// What the runner does on a host, inside a namespace: a full sync, the jump rules ensured
/// twice (the second time adds nothing), then `--cleanup` leaves no KUBE-* chain or jump behind.
#[tokio::test]
async fn the_runner_applies_ensures_jumps_once_and_cleanup_removes_everything() -> Result<(), String> {
    use kube_proxy::iptables::{Iptables, chain_names};
    use kube_proxy::rules::full_sync_text;

    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return Ok(());
    }
    let ns = Netns(format!("kp-run-{}", std::process::id()));
    run("ip", &["netns", "add", &ns.0], None)?;
    let ipt = Iptables::in_netns(&ns.0);
    let state = rendered(&[service("a", "10.96.0.10", Some(30080))], &[slice("a", &["10.244.0.2"])]);
    ipt.restore(&full_sync_text(&state, &[])).await.map_err(|e| e.to_string())?;
    let cfg = Config { forward_hook: ForwardHook::Forward, ..Config::default() };
    let jumps = jump_rules(&cfg);
    ipt.ensure_jumps(&jumps).await.map_err(|e| e.to_string())?;
    ipt.ensure_jumps(&jumps).await.map_err(|e| e.to_string())?;
    let saved = ns.exec(&["iptables-save"], None)?;
    let count = saved.lines().filter(|l| l.contains("-j KUBE-") && !l.starts_with("-A KUBE-")).count();
    assert_eq!(count, jumps.len(), "each jump once:\n{saved}");
    // The first nat PREROUTING rule is ours, as jump_rules orders them.
    let first = saved.lines().find(|l| l.starts_with("-A PREROUTING")).unwrap_or_default();
    assert!(first.ends_with("-j KUBE-SERVICES"), "{first}");

    let removed = ipt.cleanup().await.map_err(|e| e.to_string())?;
    assert!(removed >= state.nat.chains.len(), "{removed}");
    for table in ["nat", "filter"] {
        let saved = ipt.save(table).await.map_err(|e| e.to_string())?;
        assert!(!chain_names(&saved).iter().any(|c| c.starts_with("KUBE-")), "{saved}");
        assert!(!saved.contains("KUBE-"), "no jump left:\n{saved}");
    }
    // A second cleanup finds nothing to do.
    assert_eq!(ipt.cleanup().await.map_err(|e| e.to_string())?, 0);
    Ok(())
}

/// Pod routes to other nodes inside a namespace: added via the node IP, moved when the node's
/// IP changes, never over a route of another owner, removed when the node goes, and by cleanup.
#[tokio::test]
async fn pod_routes_follow_the_other_nodes_and_leave_foreign_routes_alone() -> Result<(), String> {
    use kube_proxy::routes::{PodRoute, Routes, parse_routes};

    if let Some(reason) = skip_reason() {
        println!("skipped: {reason}");
        return Ok(());
    }
    let ns = Netns(format!("kp-rt-{}", std::process::id()));
    run("ip", &["netns", "add", &ns.0], None)?;
    for cmd in [
        "ip link add br0 type bridge",
        "ip addr add 172.31.0.1/24 dev br0",
        "ip link set br0 up",
        // A pod bridge of this node: its /24 is taken.
        "ip route add 10.244.9.0/24 dev br0",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        ns.exec(&args, None)?;
    }
    let routes = Routes::in_netns(&ns.0);
    let route = |cidr: &str, via: &str| PodRoute {
        cidr: cidr.parse().expect("cidr"),
        via: via.parse::<Ipv4Addr>().expect("ip"),
    };
    let ours =
        || -> Result<Vec<PodRoute>, String> { Ok(parse_routes(&ns.exec(&["ip", "-4", "route", "show"], None)?).0) };

    routes
        .sync(&[route("10.244.2.0/24", "172.31.0.12"), route("10.244.9.0/24", "172.31.0.19")])
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(ours()?, [route("10.244.2.0/24", "172.31.0.12")]);
    let shown = ns.exec(&["ip", "-4", "route", "show"], None)?;
    assert!(shown.contains("10.244.9.0/24 dev br0"), "the foreign route stays:\n{shown}");

    routes.sync(&[route("10.244.2.0/24", "172.31.0.22")]).await.map_err(|e| e.to_string())?;
    assert_eq!(ours()?, [route("10.244.2.0/24", "172.31.0.22")]);

    routes.sync(&[route("10.244.3.0/24", "172.31.0.13")]).await.map_err(|e| e.to_string())?;
    assert_eq!(ours()?, [route("10.244.3.0/24", "172.31.0.13")]);

    assert_eq!(routes.cleanup().await.map_err(|e| e.to_string())?, 1);
    assert_eq!(ours()?, []);
    let local = routes.local_addresses().await.map_err(|e| e.to_string())?;
    assert!(local.contains(&Ipv4Addr::new(172, 31, 0, 1)), "{local:?}");
    Ok(())
}
