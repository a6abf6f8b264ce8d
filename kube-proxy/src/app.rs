//! The process: flags, `--cleanup`, the watches on Services, EndpointSlices and this Node, the
//! bounded-frequency sync loop, and the healthz and metrics servers.
//!
//! Timeline: validate flags -> (cleanup and exit) -> bind healthz/metrics -> connect -> set
//! route_localnet -> start watches -> wait for the first lists -> full sync -> loop { wait for a
//! change or the resync timer; sync } -> on SIGTERM stop, leaving the rules in place (as
//! upstream: a restarted proxy takes them over without a gap in service).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cluster_dns::ClusterDns;
use crate::dns;
use crate::iptables::Iptables;
use crate::model::{self, Ipv4Cidr};
use crate::proxier::Proxier;
use crate::routes::Routes;
use crate::rules::{Config, ForwardHook, NodeInfo};
use crate::runner::BoundedFrequency;
use crate::server::{Metrics, serve};

#[derive(Parser, Debug, Clone)]
#[command(name = "kube-proxy", version, about = "Programs iptables so Services reach their endpoints")]
pub struct Flags {
    #[arg(long, env = "KUBE_PROXY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The name of this node (default: the hostname); local endpoints are those on this node.
    #[arg(long, env = "KUBE_PROXY_HOSTNAME_OVERRIDE")]
    pub hostname_override: Option<String>,
    /// The pod network: traffic to a cluster IP from outside it is masqueraded. Empty: none
    /// (then only --masquerade-all masquerades cluster-IP traffic).
    #[arg(long, env = "KUBE_PROXY_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The least time between two syncs: lower reacts faster to changes, higher batches more
    /// changes into one iptables-restore.
    #[arg(long, env = "KUBE_PROXY_IPTABLES_MIN_SYNC_PERIOD", default_value = "1s", value_parser = leader::parse_duration)]
    pub iptables_min_sync_period: Duration,
    /// The most time between two syncs: a full resync then repairs rules someone else changed.
    #[arg(long, env = "KUBE_PROXY_IPTABLES_SYNC_PERIOD", default_value = "30s", value_parser = leader::parse_duration)]
    pub iptables_sync_period: Duration,
    /// Masquerade all traffic sent to cluster IPs (costs the client's source IP at the pod).
    #[arg(long, env = "KUBE_PROXY_MASQUERADE_ALL")]
    pub masquerade_all: bool,
    /// NodePorts also answer on 127.0.0.1 (sets net.ipv4.conf.all.route_localnet=1, with a
    /// guard rule against outside packets to 127.0.0.0/8).
    #[arg(long, env = "KUBE_PROXY_IPTABLES_LOCALHOST_NODEPORTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub iptables_localhost_nodeports: bool,
    /// Remove every KUBE-* chain and jump rule from the nat and filter tables, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Where /healthz and /livez answer (empty: nowhere).
    #[arg(long, env = "KUBE_PROXY_HEALTHZ_BIND_ADDRESS", default_value = "0.0.0.0:10256")]
    pub healthz_bind_address: String,
    /// Where /metrics answers (empty: nowhere).
    #[arg(long, env = "KUBE_PROXY_METRICS_BIND_ADDRESS", default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: String,
    /// Route each other Node's pod CIDR via its InternalIP (host-gw), so pods reach pods on other
    /// nodes with their IPs kept. Not an upstream flag: upstream leaves this to the network
    /// plugin. Off where something else routes pod CIDRs.
    #[arg(long, env = "KUBE_PROXY_SYNC_POD_ROUTES", default_value_t = true, action = clap::ArgAction::Set)]
    pub sync_pod_routes: bool,
    /// Where this node's cluster DNS listens (UDP and TCP): `node` is the node's InternalIP on
    /// port 53, `node:PORT` another port, or an explicit `IP:PORT`; empty turns the DNS off.
    /// Pods reach it through the `kube-dns` Service (`--cluster-dns-ip`), whose endpoint on each
    /// node is that node's DNS. Not an upstream flag: upstream runs CoreDNS as pods.
    #[arg(long, env = "KUBE_PROXY_CLUSTER_DNS_BIND_ADDRESS", default_value = "node")]
    pub cluster_dns_bind_address: String,
    /// The `kube-dns` Service's cluster IP (what kubelets put in pods' resolv.conf).
    #[arg(long, env = "KUBE_PROXY_CLUSTER_DNS_IP", default_value = "10.96.0.10")]
    pub cluster_dns_ip: Ipv4Addr,
    /// The cluster's DNS domain.
    #[arg(long, env = "KUBE_PROXY_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Resolvers for names outside the cluster (`IP` or `IP:PORT`, comma-separated); by default
    /// the node's /etc/resolv.conf; `none` answers SERVFAIL instead of forwarding.
    #[arg(long, env = "KUBE_PROXY_CLUSTER_DNS_UPSTREAM", value_delimiter = ',')]
    pub cluster_dns_upstream: Vec<String>,
}

impl Default for Flags {
    /// Every flag at its default.
    fn default() -> Self {
        Flags::parse_from(["kube-proxy"])
    }
}

/// A flag or configuration that cannot work; the process says so in one line and exits 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The flags, checked and typed.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub rules: Config,
    pub min_sync_period: Duration,
    pub sync_period: Duration,
    pub healthz: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub sync_pod_routes: bool,
    pub dns: Option<DnsSettings>,
}

/// Where and how the node's cluster DNS runs.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// `None` for the node's InternalIP, known once the Node is read.
    pub ip: Option<Ipv4Addr>,
    pub port: u16,
    pub service_ip: Ipv4Addr,
    pub zone: dns::Zone,
    /// `None`: the node's /etc/resolv.conf.
    pub upstream: Option<Vec<SocketAddr>>,
}

impl DnsSettings {
    fn parse(flags: &Flags) -> Result<Option<DnsSettings>, ConfigError> {
        let bind = flags.cluster_dns_bind_address.trim();
        if bind.is_empty() {
            return Ok(None);
        }
        let bad = || ConfigError(format!("--cluster-dns-bind-address: {bind:?} is not node, node:PORT or IP:PORT"));
        let (ip, port) = match bind.strip_prefix("node") {
            Some("") => (None, 53),
            Some(rest) => (None, rest.strip_prefix(':').and_then(|p| p.parse().ok()).ok_or_else(bad)?),
            None => {
                let addr: SocketAddr = bind.parse().map_err(|_| bad())?;
                match addr.ip() {
                    std::net::IpAddr::V4(v4) => (Some(v4), addr.port()),
                    std::net::IpAddr::V6(_) => return Err(bad()),
                }
            }
        };
        let mut nets = Vec::new();
        for cidr in ["10.96.0.0/12".to_string()].into_iter().chain(Some(flags.cluster_cidr.clone())) {
            if let Ok(n) = cidr.trim().parse::<dns::ReverseNet>() {
                nets.push(n);
            }
        }
        let zone =
            dns::Zone::new(&flags.cluster_domain, nets).map_err(|e| ConfigError(format!("--cluster-domain: {e}")))?;
        let upstream =
            match flags.cluster_dns_upstream.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect::<Vec<_>>() {
                v if v.is_empty() => None,
                v if v == ["none"] => Some(Vec::new()),
                v => Some(
                    v.iter()
                        .map(|s| {
                            s.parse::<SocketAddr>()
                                .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                                .map_err(|_| {
                                    ConfigError(format!("--cluster-dns-upstream: {s:?} is not an IP or IP:PORT"))
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
        Ok(Some(DnsSettings { ip, port, service_ip: flags.cluster_dns_ip, zone, upstream }))
    }
}

impl Settings {
    pub fn from_flags(flags: &Flags) -> Result<Settings, ConfigError> {
        let cluster_cidr = match flags.cluster_cidr.trim() {
            "" => None,
            s => Some(s.parse::<Ipv4Cidr>().map_err(|e| ConfigError(format!("--cluster-cidr: {e}")))?),
        };
        if flags.iptables_sync_period.is_zero() {
            return Err(ConfigError("--iptables-sync-period must be greater than 0".into()));
        }
        if flags.iptables_min_sync_period > flags.iptables_sync_period {
            return Err(ConfigError(format!(
                "--iptables-min-sync-period ({:?}) must not exceed --iptables-sync-period ({:?})",
                flags.iptables_min_sync_period, flags.iptables_sync_period
            )));
        }
        let address = |flag: &str, value: &str| -> Result<Option<SocketAddr>, ConfigError> {
            match value.trim() {
                "" => Ok(None),
                v => v.parse().map(Some).map_err(|_| ConfigError(format!("{flag}: {v:?} is not an IP:port address"))),
            }
        };
        let node_name = flags.hostname_override.clone().map(|h| h.trim().to_lowercase()).filter(|h| !h.is_empty());
        let node_name = node_name.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_lowercase())
                .unwrap_or_else(|_| "localhost".into())
        });
        Ok(Settings {
            node_name,
            rules: Config {
                cluster_cidr,
                masquerade_all: flags.masquerade_all,
                local_nodeport_loopback: flags.iptables_localhost_nodeports,
                ..Config::default()
            },
            min_sync_period: flags.iptables_min_sync_period,
            sync_period: flags.iptables_sync_period,
            healthz: address("--healthz-bind-address", &flags.healthz_bind_address)?,
            metrics: address("--metrics-bind-address", &flags.metrics_bind_address)?,
            sync_pod_routes: flags.sync_pod_routes,
            dns: DnsSettings::parse(flags)?,
        })
    }
}

pub async fn client_for(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let Some(path) = kubeconfig else { return Err(ConfigError("--kubeconfig is required".into()).into()) };
    let kc = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| ConfigError(format!("--kubeconfig {}: {e}", path.display())))?;
    let c = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| ConfigError(format!("--kubeconfig {}: {e}", path.display())))?;
    Ok(kube::Client::try_from(c)?)
}

/// The node's IPv4 addresses from its status.
fn node_info(name: &str, node: Option<&Node>) -> NodeInfo {
    let addresses = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse::<Ipv4Addr>().ok())
        .collect();
    NodeInfo { name: name.to_string(), addresses }
}

async fn bind(flag: &str, addr: Option<SocketAddr>) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("{flag} {addr}: cannot listen: {e}"))?;
    Ok(Some(listener))
}

/// Lets NodePorts answer on 127.0.0.1. Failure only costs that, so it is logged.
fn set_route_localnet() {
    let path = "/proc/sys/net/ipv4/conf/all/route_localnet";
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => {}
        _ => match std::fs::write(path, "1") {
            Ok(()) => tracing::info!("Set sysctl net.ipv4.conf.all.route_localnet=1 for NodePorts on 127.0.0.1"),
            Err(e) => {
                tracing::warn!(error = %e, "Could not set net.ipv4.conf.all.route_localnet=1; NodePorts will not answer on 127.0.0.1")
            }
        },
    }
}

/// Keeps `writer`'s store in step with a watch of `api`, waking `changed` on every event.
async fn reflect<K>(api: Api<K>, config: watcher::Config, writer: reflector::store::Writer<K>, changed: Arc<Notify>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let stream = reflector::reflector(writer, watcher::watcher(api, config).default_backoff());
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "Watch failed; retrying"),
        }
    }
}

pub async fn run(flags: Flags, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let settings = Settings::from_flags(&flags)?;
    let ipt = Iptables::host();
    if flags.cleanup {
        let removed = ipt.cleanup().await?;
        tracing::info!(chains = removed, "Removed the proxy's iptables chains and jump rules");
        let routes = Routes::host().cleanup().await?;
        if routes > 0 {
            tracing::info!(routes, "Removed the proxy's pod routes");
        }
        return Ok(());
    }
    let healthz = bind("--healthz-bind-address", settings.healthz).await?;
    let metrics_listener = bind("--metrics-bind-address", settings.metrics).await?;
    let client = client_for(flags.kubeconfig.as_ref()).await?;

    let mut rules = settings.rules.clone();
    // Docker re-inserts its jumps at the top of FORWARD on every network it creates, which would
    // push ours below its isolation DROPs: hook from DOCKER-USER when Docker manages iptables.
    rules.forward_hook =
        if ipt.has_chain("DOCKER-USER").await { ForwardHook::DockerUser } else { ForwardHook::Forward };
    if rules.local_nodeport_loopback {
        set_route_localnet();
    }

    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new(settings.sync_period));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = healthz {
        let m = metrics.clone();
        tasks.spawn(serve(listener, move |path| m.healthz_answer(path), stop.clone()));
    }
    if let Some(listener) = metrics_listener {
        let m = metrics.clone();
        tasks.spawn(serve(listener, move |path| m.metrics_answer(path), stop.clone()));
    }

    let changed = Arc::new(Notify::new());
    let (services, w) = reflector::store::<Service>();
    tasks.spawn(reflect(Api::all(client.clone()), watcher::Config::default(), w, changed.clone()));
    let (slices, w) = reflector::store::<EndpointSlice>();
    tasks.spawn(reflect(Api::all(client.clone()), watcher::Config::default(), w, changed.clone()));
    // Every Node: this one for its addresses, the others for their pod routes.
    let (nodes, w) = reflector::store::<Node>();
    tasks.spawn(reflect(Api::all(client.clone()), watcher::Config::default(), w, changed.clone()));

    tracing::info!(node = %settings.node_name, forward_hook = ?rules.forward_hook, "Starting kube-proxy");
    let mut proxier = Proxier::new(rules, ipt, metrics);
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => { stop.cancel(); return Ok(()); }
        r = async { tokio::try_join!(services.wait_until_ready(), slices.wait_until_ready(), nodes.wait_until_ready()) } => {
            r.map_err(|e| anyhow::anyhow!("watch ended: {e}"))?;
        }
    }
    tracing::info!("Caches synced");
    let mut cluster_dns = settings.dns.clone().map(|d| ClusterDns::new(d, client.clone(), stop.clone()));
    let lp = sync_loop(&mut proxier, &settings, (&services, &slices, &nodes), &changed, cluster_dns.as_mut());
    tokio::select! {
        _ = &mut shutdown => {}
        _ = lp => {}
    }
    tracing::info!("Stopping; the rules stay in place");
    proxier.stop();
    stop.cancel();
    tasks.abort_all();
    Ok(())
}

/// Syncs for ever: at once, then whenever the runner says.
async fn sync_loop(
    proxier: &mut Proxier,
    settings: &Settings,
    stores: (&Store<Service>, &Store<EndpointSlice>, &Store<Node>),
    changed: &Notify,
    mut cluster_dns: Option<&mut ClusterDns>,
) {
    let (services, slices, nodes) = stores;
    let mut runner = BoundedFrequency::new(settings.min_sync_period, settings.sync_period);
    loop {
        let at = runner.next_run(Instant::now());
        tokio::select! {
            _ = changed.notified() => { runner.request(); continue; }
            _ = tokio::time::sleep_until(at.into()) => {}
        }
        let now = Instant::now();
        let kind = runner.kind(now);
        let svcs: Vec<Service> = services.state().iter().map(|s| s.as_ref().clone()).collect();
        let eps: Vec<EndpointSlice> = slices.state().iter().map(|s| s.as_ref().clone()).collect();
        let ports = model::build(&svcs, &eps);
        let all_nodes: Vec<Node> = nodes.state().iter().map(|n| n.as_ref().clone()).collect();
        let own = all_nodes.iter().find(|n| n.metadata.name.as_deref() == Some(settings.node_name.as_str()));
        let node = node_info(&settings.node_name, own);
        let span = tracing::info_span!("sync_proxy_rules", services = svcs.len());
        let result = tracing::Instrument::instrument(proxier.sync_proxy_rules(ports, &node, kind), span).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "Sync of proxy rules failed; retrying with a full sync");
        }
        if settings.sync_pod_routes {
            // A route that cannot be set costs cross-node pod traffic, not Services: logged, and
            // tried again on the next sync.
            let routes = Routes::host();
            let synced = match routes.local_addresses().await {
                Ok(local) => routes.sync(&crate::routes::desired(&all_nodes, &settings.node_name, &local)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = synced {
                tracing::warn!(error = %e, "Could not sync pod routes to other nodes");
            }
        }
        if let Some(d) = cluster_dns.as_deref_mut() {
            d.sync(&svcs, &eps, own).await;
        }
        runner.ran(now, kind, result.is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut all = vec!["kube-proxy"];
        all.extend_from_slice(args);
        Settings::from_flags(&Flags::parse_from(all))
    }

    #[test]
    fn defaults_follow_upstream() {
        let s = settings(&["--hostname-override", "Node-A"]).expect("ok");
        assert_eq!(s.node_name, "node-a");
        assert_eq!(s.rules.cluster_cidr, "10.244.0.0/16".parse().ok());
        assert_eq!(s.min_sync_period, Duration::from_secs(1));
        assert_eq!(s.sync_period, Duration::from_secs(30));
        assert_eq!(s.healthz, "0.0.0.0:10256".parse().ok());
        assert_eq!(s.metrics, "127.0.0.1:10249".parse().ok());
        assert!(s.rules.local_nodeport_loopback && !s.rules.masquerade_all);
    }

    #[test]
    fn bad_values_are_config_errors() {
        assert!(settings(&["--cluster-cidr", "10.244.0.0/99"]).is_err());
        assert!(settings(&["--healthz-bind-address", "nope"]).is_err());
        assert!(settings(&["--iptables-min-sync-period", "1m", "--iptables-sync-period", "30s"]).is_err());
        let s = settings(&["--cluster-cidr", "", "--metrics-bind-address", ""]).expect("ok");
        assert_eq!((s.rules.cluster_cidr, s.metrics), (None, None));
    }

    #[test]
    fn the_cluster_dns_binds_the_node_address_or_what_it_is_told_and_forwards_as_told() {
        let d = settings(&[]).expect("ok").dns.expect("on by default");
        assert_eq!((d.ip, d.port, d.service_ip), (None, 53, Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(d.upstream, None, "the node's resolv.conf");
        let d = settings(&["--cluster-dns-bind-address", "node:5353", "--cluster-dns-upstream", "none"])
            .expect("ok")
            .dns
            .expect("on");
        assert_eq!((d.ip, d.port, d.upstream), (None, 5353, Some(vec![])));
        let d = settings(&[
            "--cluster-dns-bind-address",
            "127.0.0.1:53",
            "--cluster-dns-upstream",
            "192.0.2.1,192.0.2.2:5353",
        ])
        .expect("ok")
        .dns
        .expect("on");
        assert_eq!(d.ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(d.upstream, Some(vec!["192.0.2.1:53".parse().expect("a"), "192.0.2.2:5353".parse().expect("a")]));
        assert!(settings(&["--cluster-dns-bind-address", ""]).expect("ok").dns.is_none());
        for bad in [
            ["--cluster-dns-bind-address", "node:x"],
            ["--cluster-dns-upstream", "resolver"],
            ["--cluster-domain", "bad..domain"],
        ] {
            assert!(settings(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_addresses_are_its_ipv4_internal_and_external_ips() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "192.168.1.10"},
                {"type": "InternalIP", "address": "fd00::1"},
                {"type": "Hostname", "address": "n"},
                {"type": "ExternalIP", "address": "203.0.113.5"},
            ]}
        }))
        .expect("node");
        let info = node_info("n", Some(&node));
        assert_eq!(info.addresses, [Ipv4Addr::new(192, 168, 1, 10), Ipv4Addr::new(203, 0, 113, 5)]);
        assert!(node_info("n", None).addresses.is_empty());
    }
}
