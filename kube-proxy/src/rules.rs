//! The iptables rule set for a node, rendered as `iptables-restore` input.
//!
//! [`render`] is pure: Service ports + this node + config in, the whole `filter` and `nat` rule
//! set out, as text and as per-chain rule lists. The structure is upstream kube-proxy's iptables
//! mode, so `iptables-save` on a node reads the way Kubernetes users expect:
//!
//! ```text
//! nat    PREROUTING/OUTPUT -> KUBE-SERVICES -> KUBE-SVC-x (cluster IP) or KUBE-SVL-x (Local policy)
//!                                          -> KUBE-EXT-x (external IPs, load-balancer IPs)
//!                                          -> KUBE-NODEPORTS -> KUBE-EXT-x   (must stay last)
//!        KUBE-EXT-x -> KUBE-MARK-MASQ, then KUBE-SVC-x or KUBE-SVL-x
//!        KUBE-FW-x  (loadBalancerSourceRanges) -> KUBE-EXT-x for allowed sources
//!        KUBE-SVC-x/KUBE-SVL-x -> KUBE-SEP-y (random spread, optional ClientIP affinity) -> DNAT
//!        POSTROUTING -> KUBE-POSTROUTING: MASQUERADE what KUBE-MARK-MASQ marked (0x4000)
//! filter KUBE-SERVICES / KUBE-EXTERNAL-SERVICES: REJECT (no endpoints) or DROP (no local ones)
//!        KUBE-FORWARD: accept marked and established forwarded traffic
//!        KUBE-NODEPORTS: accept health-check node ports; KUBE-PROXY-FIREWALL: source ranges
//!        KUBE-FIREWALL: the localnet guard that makes route_localnet safe
//! ```
//!
//! Invariants (tested): every chain name is at most 28 characters; every `-j` target is a built-in
//! target or a chain declared in the same table; the output depends only on the inputs (services
//! sorted, endpoints in address order). The jumps from the built-in chains are not part of the
//! restore text (a `--noflush` restore must not rewrite PREROUTING and friends); [`jump_rules`]
//! lists them for the runner to ensure one by one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use ring::digest::{SHA256, digest};

use crate::model::{Endpoint, Ipv4Cidr, ServicePort, TrafficPolicy};

pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";
pub const KUBE_FIREWALL: &str = "KUBE-FIREWALL";

/// The packet mark meaning "masquerade this in POSTROUTING" (bit 14, upstream's default).
pub const MASQ_MARK: &str = "0x4000";

const SVC_PREFIX: &str = "KUBE-SVC-";
const SVL_PREFIX: &str = "KUBE-SVL-";
const EXT_PREFIX: &str = "KUBE-EXT-";
const FW_PREFIX: &str = "KUBE-FW-";
const SEP_PREFIX: &str = "KUBE-SEP-";

/// Longest chain name iptables accepts.
pub const MAX_CHAIN_NAME: usize = 28;

/// What the renderer needs to know about the node it runs on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The Node's name, compared with endpoints' `nodeName` to find local endpoints.
    pub name: String,
    /// The node's own IPs; a load-balancer source range that contains one lets the node in.
    pub addresses: Vec<Ipv4Addr>,
}

/// Where the filter table's FORWARD-path chains are hooked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardHook {
    /// Straight from FORWARD, for hosts where no dockerd manages iptables.
    Forward,
    /// From DOCKER-USER: dockerd re-inserts its own jumps at the top of FORWARD whenever it
    /// creates a network, which would push ours below its isolation DROPs.
    #[default]
    DockerUser,
}

impl ForwardHook {
    fn chain(self) -> &'static str {
        match self {
            ForwardHook::Forward => "FORWARD",
            ForwardHook::DockerUser => "DOCKER-USER",
        }
    }
}

/// Proxy-wide settings that shape the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The pod network. Traffic to a cluster IP from outside it is masqueraded; pod traffic to an
    /// external destination of an `externalTrafficPolicy: Local` Service may use any endpoint.
    /// `None` disables both (as upstream without a local-traffic detector).
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// Masquerade all cluster-IP traffic, not just traffic from outside the pod network.
    pub masquerade_all: bool,
    /// NodePorts also answer on 127.0.0.1. Needs `net.ipv4.conf.all.route_localnet=1`, which the
    /// runner sets; the rules add the localnet guard (KUBE-FIREWALL) that upstream adds with it.
    pub local_nodeport_loopback: bool,
    /// Use `MASQUERADE --random-fully` (verified with iptables 1.8.9 nft on these machines).
    pub masquerade_random_fully: bool,
    /// `net.netfilter.nf_conntrack_tcp_be_liberal` is set: no DROP of INVALID forwarded packets.
    pub conntrack_tcp_liberal: bool,
    /// Accept forwarded traffic from and to `cluster_cidr` in KUBE-FORWARD. Upstream leaves that to
    /// the network plugin; here dockerd's FORWARD policy DROP would otherwise block cross-node pod
    /// traffic (networking recipe, section 1.4).
    pub forward_accept_cluster_cidr: bool,
    /// Where the FORWARD-path filter chains are hooked (only used by [`jump_rules`]).
    pub forward_hook: ForwardHook,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            cluster_cidr: None,
            masquerade_all: false,
            local_nodeport_loopback: true,
            masquerade_random_fully: true,
            conntrack_tcp_liberal: false,
            forward_accept_cluster_cidr: true,
            forward_hook: ForwardHook::default(),
        }
    }
}

/// One chain and its rules, each a complete `-A CHAIN ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

/// The chains of one table, in the order they are declared in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: &'static str,
    pub chains: Vec<Chain>,
}

impl Table {
    /// The chain called `name`, if this table has it.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    /// The names of all chains, in declaration order.
    pub fn chain_names(&self) -> Vec<String> {
        self.chains.iter().map(|c| c.name.clone()).collect()
    }

    fn by_name(&self) -> HashMap<&str, &Chain> {
        self.chains.iter().map(|c| (c.name.as_str(), c)).collect()
    }
}

/// A rendered rule set: the full restore text and the same rules per chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub filter: Table,
    pub nat: Table,
    /// `*filter ... COMMIT *nat ... COMMIT`, for `iptables-restore --noflush`.
    pub text: String,
}

/// A jump from a built-in chain to one of ours, ensured with `iptables -C` / `-I`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpRule {
    pub table: &'static str,
    /// The built-in (or Docker's DOCKER-USER) chain that holds the jump.
    pub chain: &'static str,
    /// The rule's arguments, one per argv element (no shell quoting), ending in `-j TARGET`.
    pub args: Vec<String>,
}

/// The whole `filter` and `nat` rule set for `services` on `node`.
pub fn render(services: &[ServicePort], node: &NodeInfo, cfg: &Config) -> Rendered {
    let mut filter = TableBuilder::new(
        "filter",
        &[KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL],
    );
    let mut nat = TableBuilder::new("nat", &[KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]);

    let masq = format!("{MASQ_MARK}/{MASQ_MARK}");
    nat.add(KUBE_POSTROUTING, format_args!("-m mark ! --mark {masq} -j RETURN"));
    // Clear the mark so a packet that goes through the stack again is not masqueraded twice.
    nat.add(KUBE_POSTROUTING, format_args!("-j MARK --xor-mark {MASQ_MARK}"));
    let random_fully = if cfg.masquerade_random_fully { " --random-fully" } else { "" };
    nat.add(
        KUBE_POSTROUTING,
        format_args!("{} -j MASQUERADE{random_fully}", comment("kubernetes service traffic requiring SNAT")),
    );
    nat.add(KUBE_MARK_MASQ, format_args!("-j MARK --or-mark {MASQ_MARK}"));

    if cfg.local_nodeport_loopback {
        // route_localnet lets any host send to 127.0.0.0/8 on this node; only allow what a DNAT
        // made or what already belongs to an accepted connection.
        filter.add(
            KUBE_FIREWALL,
            format_args!(
                "{} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
                comment("block incoming localnet connections")
            ),
        );
    }

    let mut sorted: Vec<&ServicePort> = services.iter().collect();
    sorted.sort_by(|a, b| {
        (&a.namespace, &a.name, &a.port_name, a.protocol).cmp(&(&b.namespace, &b.name, &b.port_name, b.protocol))
    });
    for sp in sorted {
        render_service(sp, node, cfg, &mut filter, &mut nat);
    }

    // Node ports come last in KUBE-SERVICES: a node IP may also be an external IP of a Service,
    // and the more specific rule must win.
    let loopback = if cfg.local_nodeport_loopback { "" } else { " ! -d 127.0.0.0/8" };
    nat.add(
        KUBE_SERVICES,
        format_args!(
            "{} -m addrtype --dst-type LOCAL{loopback} -j {KUBE_NODEPORTS}",
            comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
        ),
    );

    if !cfg.conntrack_tcp_liberal {
        // An out-of-window packet would otherwise be forwarded un-NATed and reset the connection.
        filter.add(KUBE_FORWARD, "-m conntrack --ctstate INVALID -j DROP");
    }
    filter
        .add(KUBE_FORWARD, format_args!("{} -m mark --mark {masq} -j ACCEPT", comment("kubernetes forwarding rules")));
    filter.add(
        KUBE_FORWARD,
        format_args!(
            "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            comment("kubernetes forwarding conntrack rule")
        ),
    );
    if let (true, Some(cidr)) = (cfg.forward_accept_cluster_cidr, cfg.cluster_cidr) {
        filter.add(
            KUBE_FORWARD,
            format_args!("-s {cidr} {} -j ACCEPT", comment("kubernetes forwarding pod source rule")),
        );
        filter.add(
            KUBE_FORWARD,
            format_args!("-d {cidr} {} -j ACCEPT", comment("kubernetes forwarding pod destination rule")),
        );
    }

    let filter = filter.finish();
    let nat = nat.finish();
    let mut text = String::new();
    write_table(&mut text, &filter, filter.chains.iter(), &[], &[]);
    write_table(&mut text, &nat, nat.chains.iter(), &[], &[]);
    Rendered { filter, nat, text }
}

/// Service chains (KUBE-SVC/SVL/EXT/FW/SEP) named in `previous` that `current` no longer has, sorted.
///
/// `previous` is the nat chain names of the last applied render, or, after a restart, the chain
/// names `iptables-save -t nat` lists. Chains of other owners are never returned.
pub fn stale_chains<'a>(previous: impl IntoIterator<Item = &'a str>, current: &Rendered) -> Vec<String> {
    let now: HashSet<&str> = current.nat.chains.iter().map(|c| c.name.as_str()).collect();
    let mut stale: Vec<String> =
        previous.into_iter().filter(|c| is_service_chain(c) && !now.contains(c)).map(String::from).collect();
    stale.sort();
    stale.dedup();
    stale
}

/// The full rule set of `next` plus flush-and-delete lines for the `stale` nat chains: the input
/// for a full sync with `iptables-restore --noflush`.
pub fn full_sync_text(next: &Rendered, stale: &[String]) -> String {
    let mut text = String::new();
    write_table(&mut text, &next.filter, next.filter.chains.iter(), &[], &[]);
    write_table(&mut text, &next.nat, next.nat.chains.iter(), &[], stale);
    text
}

/// Restore input that turns the rules of `prev` into those of `next`, for
/// `iptables-restore --noflush`: only chains that are new or whose rules changed, plus stale
/// service chains flushed and deleted. Other stale chains (say KUBE-FIREWALL after loopback node
/// ports were turned off) are flushed but kept, because a built-in chain may still jump to them.
/// Empty when nothing changed.
///
/// This is correct only if the kernel still holds `prev`; after a failed restore, or when the
/// runner is unsure, it must do a full sync instead.
pub fn render_changed(prev: &Rendered, next: &Rendered) -> String {
    let mut text = String::new();
    for (old, new) in [(&prev.filter, &next.filter), (&prev.nat, &next.nat)] {
        let old_chains = old.by_name();
        let new_names: HashSet<&str> = new.chains.iter().map(|c| c.name.as_str()).collect();
        let changed: Vec<&Chain> =
            new.chains.iter().filter(|c| old_chains.get(c.name.as_str()).is_none_or(|o| o.rules != c.rules)).collect();
        let gone: Vec<&str> =
            old.chains.iter().map(|c| c.name.as_str()).filter(|name| !new_names.contains(name)).collect();
        let (mut delete, mut flush): (Vec<String>, Vec<String>) =
            gone.into_iter().map(String::from).partition(|name| is_service_chain(name));
        delete.sort();
        flush.sort();
        if changed.is_empty() && delete.is_empty() && flush.is_empty() {
            continue;
        }
        write_table(&mut text, new, changed.into_iter(), &flush, &delete);
    }
    text
}

/// The jumps from built-in chains into ours, top to bottom per chain. Ensure each with
/// `iptables -t TABLE -C CHAIN ARGS...`, and insert missing ones in reverse list order with
/// `-I CHAIN 1` so they end up first and in this order.
pub fn jump_rules(cfg: &Config) -> Vec<JumpRule> {
    let new_only = ["-m", "conntrack", "--ctstate", "NEW"];
    let jump = |table, chain, extra: &[&str], comment: &str, target: &str| {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !comment.is_empty() {
            args.extend(["-m", "comment", "--comment", comment].map(String::from));
        }
        args.extend(["-j".to_string(), target.to_string()]);
        JumpRule { table, chain, args }
    };
    let forward = cfg.forward_hook.chain();
    let mut rules = vec![
        jump("filter", "INPUT", &new_only, "kubernetes load balancer firewall", KUBE_PROXY_FIREWALL),
        jump("filter", "INPUT", &[], "kubernetes health check service ports", KUBE_NODEPORTS),
        jump("filter", "INPUT", &new_only, "kubernetes externally-visible service portals", KUBE_EXTERNAL_SERVICES),
        jump("filter", forward, &new_only, "kubernetes load balancer firewall", KUBE_PROXY_FIREWALL),
        jump("filter", forward, &[], "kubernetes forwarding rules", KUBE_FORWARD),
        jump("filter", forward, &new_only, "kubernetes service portals", KUBE_SERVICES),
        jump("filter", forward, &new_only, "kubernetes externally-visible service portals", KUBE_EXTERNAL_SERVICES),
        jump("filter", "OUTPUT", &new_only, "kubernetes load balancer firewall", KUBE_PROXY_FIREWALL),
        jump("filter", "OUTPUT", &new_only, "kubernetes service portals", KUBE_SERVICES),
        jump("nat", "PREROUTING", &[], "kubernetes service portals", KUBE_SERVICES),
        jump("nat", "OUTPUT", &[], "kubernetes service portals", KUBE_SERVICES),
        jump("nat", "POSTROUTING", &[], "kubernetes postrouting rules", KUBE_POSTROUTING),
    ];
    if cfg.local_nodeport_loopback {
        rules.push(jump("filter", "INPUT", &[], "", KUBE_FIREWALL));
        rules.push(jump("filter", "OUTPUT", &[], "", KUBE_FIREWALL));
    }
    rules
}

/// Whether `name` is a per-service chain this renderer creates and may delete.
pub fn is_service_chain(name: &str) -> bool {
    [SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX].iter().any(|p| name.starts_with(p))
}

/// `prefix` + the first 16 base32 characters of SHA-256(`port_name` + `protocol`): upstream's
/// names, so chains are stable across restarts and match what other tools expect.
pub fn service_chain_name(prefix: &str, port_name: &str, protocol: &str) -> String {
    format!("{prefix}{}", hash16(&format!("{port_name}{protocol}")))
}

/// The KUBE-SEP chain of one endpoint (`ip:port`) of a Service port.
pub fn endpoint_chain_name(port_name: &str, protocol: &str, endpoint: &str) -> String {
    format!("{SEP_PREFIX}{}", hash16(&format!("{port_name}{protocol}{endpoint}")))
}

/// Base32 (RFC 4648 alphabet) of the first 10 bytes of the SHA-256 of `input`: 16 characters.
fn hash16(input: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let sum = digest(&SHA256, input.as_bytes());
    let mut out = String::with_capacity(16);
    for group in sum.as_ref()[..10].chunks(5) {
        let bits = group.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for i in (0..8).rev() {
            out.push(char::from(ALPHABET[((bits >> (i * 5)) & 31) as usize]));
        }
    }
    out
}

/// Upstream's probability text for picking 1 of `n` remaining endpoints.
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// A comment match. Quotes and line breaks are dropped so a name can never break the restore
/// syntax (names are validated by the apiserver, so this only matters for bad input).
fn comment(text: &str) -> String {
    let bad = |c: char| matches!(c, '"' | '\\' | '\n' | '\r');
    let mut out = String::with_capacity(text.len() + 24);
    out.push_str("-m comment --comment \"");
    if text.contains(bad) {
        out.extend(text.chars().filter(|c| !bad(*c)));
    } else {
        out.push_str(text);
    }
    out.push('"');
    out
}

/// Which endpoints each traffic policy uses, as upstream's CategorizeEndpoints (without topology
/// hints).
struct Categorized<'a> {
    /// For Cluster policy: the ready endpoints, or else the serving terminating ones.
    cluster: Vec<&'a Endpoint>,
    /// For Local policy: this node's ready endpoints, or else its serving terminating ones.
    local: Vec<&'a Endpoint>,
    /// Union of the two, in address order: the endpoints that get a KUBE-SEP chain.
    all: Vec<&'a Endpoint>,
    /// Whether any node has a usable endpoint.
    any: bool,
}

fn uses_cluster_endpoints(sp: &ServicePort) -> bool {
    // Even with Local external policy, traffic from this node short-circuits to all endpoints.
    sp.internal_traffic_policy == TrafficPolicy::Cluster || sp.externally_accessible()
}

fn uses_local_endpoints(sp: &ServicePort) -> bool {
    sp.internal_traffic_policy == TrafficPolicy::Local
        || (sp.external_traffic_policy == TrafficPolicy::Local && sp.externally_accessible())
}

fn categorize<'a>(sp: &'a ServicePort, node: &str) -> Categorized<'a> {
    let usable_terminating = |e: &Endpoint| !e.ready && e.serving && e.terminating;
    let is_local = |e: &Endpoint| !node.is_empty() && e.node_name.as_deref() == Some(node);
    let pick = |filter: &dyn Fn(&Endpoint) -> bool| -> Vec<&'a Endpoint> {
        let ready: Vec<&Endpoint> = sp.endpoints.iter().filter(|e| e.ready && filter(e)).collect();
        if !ready.is_empty() {
            return ready;
        }
        sp.endpoints.iter().filter(|e| usable_terminating(e) && filter(e)).collect()
    };
    let any = sp.endpoints.iter().any(|e| e.ready || usable_terminating(e));
    let cluster = if uses_cluster_endpoints(sp) { pick(&|_| true) } else { Vec::new() };
    let local = if uses_local_endpoints(sp) { pick(&is_local) } else { Vec::new() };
    let mut all: Vec<&Endpoint> = cluster.iter().chain(local.iter()).copied().collect();
    all.sort_by_key(|e| (e.ip, e.port));
    all.dedup_by_key(|e| (e.ip, e.port));
    Categorized { cluster, local, all, any }
}

fn render_service(sp: &ServicePort, node: &NodeInfo, cfg: &Config, filter: &mut TableBuilder, nat: &mut TableBuilder) {
    let proto = sp.protocol.as_iptables();
    let name = sp.port_name_string();
    let svc_chain = service_chain_name(SVC_PREFIX, &name, proto);
    let svl_chain = service_chain_name(SVL_PREFIX, &name, proto);
    let ext_chain = service_chain_name(EXT_PREFIX, &name, proto);
    let fw_chain = service_chain_name(FW_PREFIX, &name, proto);
    let eps = categorize(sp, &node.name);

    let uses_svc = !eps.cluster.is_empty() && uses_cluster_endpoints(sp);
    let uses_svl = !eps.local.is_empty() && uses_local_endpoints(sp);
    let (internal_chain, has_internal) = match sp.internal_traffic_policy {
        TrafficPolicy::Cluster => (&svc_chain, eps.any),
        TrafficPolicy::Local => (&svl_chain, eps.any && !eps.local.is_empty()),
    };
    let (external_policy_chain, has_external) = match sp.external_traffic_policy {
        TrafficPolicy::Cluster => (&svc_chain, eps.any),
        TrafficPolicy::Local => (&svl_chain, eps.any && !eps.local.is_empty()),
    };
    // The EXT chain exists whenever there are endpoints anywhere: even with no local endpoint,
    // traffic from this node and its pods still short-circuits to the cluster-wide ones.
    let uses_ext = eps.any && sp.externally_accessible();
    let uses_fw = eps.any && !sp.load_balancer_ips.is_empty() && !sp.load_balancer_source_ranges.is_empty();
    let lb_chain = if uses_fw { &fw_chain } else { &ext_chain };

    // No endpoints anywhere: REJECT, so clients fail fast. Endpoints, but none for this policy on
    // this node: DROP, as the traffic may be retried through another node.
    let (missing_target, missing_comment) = if eps.any {
        ("DROP", format!("{name} has no local endpoints"))
    } else {
        ("REJECT", format!("{name} has no endpoints"))
    };
    let dest = |ip: Ipv4Addr, port: u16| format!("-d {ip}/32 -p {proto} -m {proto} --dport {port}");

    // Declare this Service's nat chains up front so the text lists them in a fixed order.
    for (used, chain) in [(uses_ext, &ext_chain), (uses_fw, &fw_chain), (uses_svc, &svc_chain), (uses_svl, &svl_chain)]
    {
        if used {
            nat.declare(chain);
        }
    }
    let sep_chains: Vec<(String, &Endpoint)> =
        eps.all.iter().map(|e| (endpoint_chain_name(&name, proto, &e.addr()), *e)).collect();
    for (chain, _) in &sep_chains {
        nat.declare(chain);
    }

    // Cluster IP.
    let cluster_dest = dest(sp.cluster_ip, sp.port);
    if has_internal {
        nat.add(
            KUBE_SERVICES,
            format_args!("{} {cluster_dest} -j {internal_chain}", comment(&format!("{name} cluster IP"))),
        );
    } else {
        filter.add(KUBE_SERVICES, format_args!("{} {cluster_dest} -j {missing_target}", comment(&missing_comment)));
    }

    // External IPs.
    for ip in &sp.external_ips {
        let d = dest(*ip, sp.port);
        if eps.any {
            nat.add(KUBE_SERVICES, format_args!("{} {d} -j {ext_chain}", comment(&format!("{name} external IP"))));
        }
        if !has_external {
            filter.add(KUBE_EXTERNAL_SERVICES, format_args!("{} {d} -j {missing_target}", comment(&missing_comment)));
        }
    }

    // Load-balancer IPs.
    for ip in &sp.load_balancer_ips {
        let d = dest(*ip, sp.port);
        if eps.any {
            nat.add(KUBE_SERVICES, format_args!("{} {d} -j {lb_chain}", comment(&format!("{name} loadbalancer IP"))));
        }
        if uses_fw {
            // What the FW chain did not send on was not DNATed and ends here.
            let note = format!("{name} traffic not accepted by {fw_chain}");
            filter.add(KUBE_PROXY_FIREWALL, format_args!("{} {d} -j DROP", comment(&note)));
        }
    }
    if !has_external {
        for ip in &sp.load_balancer_ips {
            let d = dest(*ip, sp.port);
            filter.add(KUBE_EXTERNAL_SERVICES, format_args!("{} {d} -j {missing_target}", comment(&missing_comment)));
        }
    }

    // Node port, on every local address (KUBE-SERVICES jumps here for --dst-type LOCAL).
    if let Some(node_port) = sp.node_port {
        let m = format!("-p {proto} -m {proto} --dport {node_port}");
        if eps.any {
            nat.add(KUBE_NODEPORTS, format_args!("{} {m} -j {ext_chain}", comment(&name)));
        }
        if !has_external {
            filter.add(
                KUBE_EXTERNAL_SERVICES,
                format_args!("{} -m addrtype --dst-type LOCAL {m} -j {missing_target}", comment(&missing_comment)),
            );
        }
    }

    // The health-check node port is served by the proxy's HTTP server; let it through.
    if let Some(hc) = sp.health_check_node_port {
        filter.add(
            KUBE_NODEPORTS,
            format_args!("{} -p tcp -m tcp --dport {hc} -j ACCEPT", comment(&format!("{name} health check node port"))),
        );
    }

    // Masquerade cluster-IP traffic that comes from outside the pod network: its replies must
    // come back through this node.
    if has_internal {
        let c = comment(&format!("{name} cluster IP"));
        if cfg.masquerade_all {
            nat.add(internal_chain, format_args!("{c} {cluster_dest} -j {KUBE_MARK_MASQ}"));
        } else if let Some(cidr) = cfg.cluster_cidr {
            nat.add(internal_chain, format_args!("{c} {cluster_dest} ! -s {cidr} -j {KUBE_MARK_MASQ}"));
        }
    }

    if uses_ext {
        match sp.external_traffic_policy {
            TrafficPolicy::Cluster => {
                // The endpoint may be on another node; the reply must come back through this one.
                let c = comment(&format!("masquerade traffic for {name} external destinations"));
                nat.add(&ext_chain, format_args!("{c} -j {KUBE_MARK_MASQ}"));
            }
            TrafficPolicy::Local => {
                // Keep the client's source IP. Pods on this node and the node itself are treated as
                // if they went out to the load balancer and came back: any endpoint will do.
                if let Some(cidr) = cfg.cluster_cidr {
                    let c = comment(&format!("pod traffic for {name} external destinations"));
                    nat.add(&ext_chain, format_args!("{c} -s {cidr} -j {svc_chain}"));
                }
                // The node's own traffic (including 127.0.0.1 node ports) must be masqueraded: its
                // source is a local address the endpoint cannot answer.
                let c = comment(&format!("masquerade LOCAL traffic for {name} external destinations"));
                nat.add(&ext_chain, format_args!("{c} -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"));
                let c = comment(&format!("route LOCAL traffic for {name} external destinations"));
                nat.add(&ext_chain, format_args!("{c} -m addrtype --src-type LOCAL -j {svc_chain}"));
            }
        }
        if has_external {
            nat.add(&ext_chain, format_args!("{} -j {external_policy_chain}", comment(&name)));
        }
    }

    if uses_fw {
        let c = comment(&format!("{name} loadbalancer IP"));
        let mut allow_node = false;
        for range in &sp.load_balancer_source_ranges {
            nat.add(&fw_chain, format_args!("{c} -s {range} -j {ext_chain}"));
            allow_node |= node.addresses.iter().any(|a| range.contains(*a));
        }
        if allow_node {
            // A node that holds the load-balancer IP itself talks to it with that IP as source.
            for ip in &sp.load_balancer_ips {
                nat.add(&fw_chain, format_args!("{c} -s {ip}/32 -j {ext_chain}"));
            }
        }
        // Anything else falls off the end un-DNATed and is dropped by KUBE-PROXY-FIREWALL.
        let c = comment(&format!("other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL"));
        nat.add(&fw_chain, c);
    }

    // Every endpoint the SVC and SVL chains use is in `eps.all`, so each has its chain here.
    let seps: HashMap<(Ipv4Addr, u16), &str> = sep_chains.iter().map(|(c, e)| ((e.ip, e.port), c.as_str())).collect();
    if uses_svc {
        write_balancing(nat, &svc_chain, &name, sp.session_affinity_timeout, &eps.cluster, &seps);
    }
    if uses_svl {
        write_balancing(nat, &svl_chain, &name, sp.session_affinity_timeout, &eps.local, &seps);
    }

    for (chain, ep) in &sep_chains {
        let c = comment(&name);
        // Hairpin: a pod reaching itself through the Service needs a source it will answer via
        // the bridge, so masquerade it.
        nat.add(chain, format_args!("{c} -s {}/32 -j {KUBE_MARK_MASQ}", ep.ip));
        let affinity = if sp.session_affinity_timeout.is_some() {
            format!(" -m recent --name {chain} --set")
        } else {
            String::new()
        };
        nat.add(chain, format_args!("{c}{affinity} -p {proto} -m {proto} -j DNAT --to-destination {}", ep.addr()));
    }
}

/// The rules of a KUBE-SVC or KUBE-SVL chain: affinity checks first, then an even random spread
/// where rule i matches with probability 1/(n-i) and the last always matches.
fn write_balancing(
    nat: &mut TableBuilder,
    chain: &str,
    name: &str,
    affinity: Option<u32>,
    endpoints: &[&Endpoint],
    seps: &HashMap<(Ipv4Addr, u16), &str>,
) {
    let sep_of = |e: &Endpoint| seps.get(&(e.ip, e.port)).copied().unwrap_or_default();
    if let Some(seconds) = affinity {
        for ep in endpoints {
            let sep = sep_of(ep);
            let c = comment(&format!("{name} -> {}", ep.addr()));
            nat.add(chain, format_args!("{c} -m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}"));
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let c = comment(&format!("{name} -> {}", ep.addr()));
        let sep = sep_of(ep);
        if i + 1 < n {
            let p = probability(n - i);
            nat.add(chain, format_args!("{c} -m statistic --mode random --probability {p} -j {sep}"));
        } else {
            nat.add(chain, format_args!("{c} -j {sep}"));
        }
    }
}

/// Room for a typical rule line (about 150 bytes), so most are written without growing.
const RULE_LINE_CAPACITY: usize = 192;

/// Collects chains in declaration order and their rules.
struct TableBuilder {
    name: &'static str,
    chains: Vec<Chain>,
    index: HashMap<String, usize>,
}

impl TableBuilder {
    fn new(name: &'static str, top_level: &[&str]) -> TableBuilder {
        let mut t = TableBuilder { name, chains: Vec::new(), index: HashMap::new() };
        for chain in top_level {
            t.declare(chain);
        }
        t
    }

    fn declare(&mut self, chain: &str) -> usize {
        if let Some(i) = self.index.get(chain) {
            return *i;
        }
        self.chains.push(Chain { name: chain.to_string(), rules: Vec::new() });
        self.index.insert(chain.to_string(), self.chains.len() - 1);
        self.chains.len() - 1
    }

    /// Appends `-A CHAIN rule`. Takes `format_args!` so each rule line is one allocation: a
    /// render at 10,000 Services writes 80,000 of them, and allocation was most of its time.
    fn add(&mut self, chain: &str, rule: impl fmt::Display) {
        use fmt::Write;
        let i = self.declare(chain);
        let mut line = String::with_capacity(RULE_LINE_CAPACITY);
        line.push_str("-A ");
        line.push_str(chain);
        line.push(' ');
        // Writing to a String cannot fail.
        let _ = write!(line, "{rule}");
        self.chains[i].rules.push(line);
    }

    fn finish(self) -> Table {
        Table { name: self.name, chains: self.chains }
    }
}

/// Appends one table's restore section: declarations (which flush), rules, then the deletions.
fn write_table<'a>(
    out: &mut String,
    table: &Table,
    chains: impl Iterator<Item = &'a Chain> + Clone,
    flush_only: &[String],
    delete: &[String],
) {
    const DECLARE: &str = " - [0:0]\n";
    // Reserve the whole section up front: growing a 12 MB text by doubling copies it again and again.
    let rules: usize =
        chains.clone().map(|c| c.name.len() + 12 + c.rules.iter().map(|r| r.len() + 1).sum::<usize>()).sum();
    let removed: usize = flush_only.iter().chain(delete).chain(delete).map(|n| n.len() + 12).sum();
    out.reserve(rules + removed + 32);
    out.push('*');
    out.push_str(table.name);
    out.push('\n');
    for name in chains.clone().map(|c| &c.name).chain(flush_only).chain(delete) {
        out.push(':');
        out.push_str(name);
        out.push_str(DECLARE);
    }
    for c in chains {
        for rule in &c.rules {
            out.push_str(rule);
            out.push('\n');
        }
    }
    for name in delete {
        out.push_str("-X ");
        out.push_str(name);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build;
    use crate::model::tests::{Slice, Svc};

    fn node() -> NodeInfo {
        NodeInfo { name: "node-a".into(), addresses: vec![Ipv4Addr::new(192, 168, 1, 10)] }
    }

    fn cfg() -> Config {
        Config { cluster_cidr: "10.244.0.0/16".parse().ok(), ..Config::default() }
    }

    fn ports(services: Vec<Svc>, slices: Vec<Slice>) -> Vec<ServicePort> {
        let services: Vec<_> = services.into_iter().map(|s| s.0).collect();
        let slices: Vec<_> = slices.into_iter().map(|s| s.0).collect();
        build(&services, &slices)
    }

    fn text(services: Vec<Svc>, slices: Vec<Slice>) -> String {
        text_with(&cfg(), services, slices)
    }

    fn text_with(cfg: &Config, services: Vec<Svc>, slices: Vec<Slice>) -> String {
        render(&ports(services, slices), &node(), cfg).text
    }

    // Fixed parts of every render with `cfg()`, spelled out once.
    macro_rules! filter_head {
        () => {
            concat!(
                "*filter\n",
                ":KUBE-SERVICES - [0:0]\n",
                ":KUBE-EXTERNAL-SERVICES - [0:0]\n",
                ":KUBE-FORWARD - [0:0]\n",
                ":KUBE-NODEPORTS - [0:0]\n",
                ":KUBE-PROXY-FIREWALL - [0:0]\n",
                ":KUBE-FIREWALL - [0:0]\n",
            )
        };
    }

    macro_rules! forward_rules {
        () => {
            concat!(
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n",
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n",
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
            "-A KUBE-FORWARD -s 10.244.0.0/16 -m comment --comment \"kubernetes forwarding pod source rule\" -j ACCEPT\n",
            "-A KUBE-FORWARD -d 10.244.0.0/16 -m comment --comment \"kubernetes forwarding pod destination rule\" -j ACCEPT\n",
            )
        };
    }

    macro_rules! localnet_guard {
        () => {
            concat!(
            "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP\n",
            )
        };
    }

    macro_rules! nat_head {
        () => {
            concat!(
                "*nat\n",
                ":KUBE-SERVICES - [0:0]\n",
                ":KUBE-NODEPORTS - [0:0]\n",
                ":KUBE-POSTROUTING - [0:0]\n",
                ":KUBE-MARK-MASQ - [0:0]\n",
            )
        };
    }

    macro_rules! nodeports_last {
        () => {
            concat!(
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
            )
        };
    }

    macro_rules! masq_rules {
        () => {
            concat!(
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
            )
        };
    }

    #[test]
    fn cluster_ip_with_one_endpoint() {
        // One endpoint: no statistic match; traffic from outside the pod network is masqueraded; the SEP chain masquerades hairpin traffic and DNATs.
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None)],
            vec![web().ep("10.244.0.2", "node-a")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            masq_rules!(),
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn cluster_ip_with_three_endpoints_spreads_evenly() {
        // 1/3, then 1/2 of the rest, then the last one unconditionally.
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None)],
            vec![web().ep("10.244.0.2", "node-a").ep("10.244.1.2", "node-b").ep("10.244.2.2", "node-c")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            ":KUBE-SEP-TCHSYJU4C2SBUOO7 - [0:0]\n",
            ":KUBE-SEP-Z6OJ54VKONQ5FNID - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            masq_rules!(),
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.1.2:8080\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-TCHSYJU4C2SBUOO7\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.2.2:8080\" -j KUBE-SEP-Z6OJ54VKONQ5FNID\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -s 10.244.1.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080\n",
            "-A KUBE-SEP-Z6OJ54VKONQ5FNID -m comment --comment \"ns1/web:http\" -s 10.244.2.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-Z6OJ54VKONQ5FNID -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.2.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn service_without_endpoints_is_rejected() {
        // No nat chains at all; the cluster IP, the external IP and the node port are REJECTed in filter.
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![
                Svc::new("ns1", "web", "10.96.0.10")
                    .type_("NodePort")
                    .port("http", "TCP", 80, Some(30080))
                    .external_ips(&["192.0.2.50"]),
            ],
            vec![web()],
        );
        let want = concat!(
            filter_head!(),
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http has no endpoints\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j REJECT\n",
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns1/web:http has no endpoints\" -d 192.0.2.50/32 -p tcp -m tcp --dport 80 -j REJECT\n",
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns1/web:http has no endpoints\" -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j REJECT\n",
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            nodeports_last!(),
            masq_rules!(),
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn session_affinity_checks_recent_before_spreading() {
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None).affinity(None)],
            vec![web().ep("10.244.0.2", "node-a").ep("10.244.1.2", "node-b")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            ":KUBE-SEP-TCHSYJU4C2SBUOO7 - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            masq_rules!(),
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -m recent --name KUBE-SEP-BJ753PBDBFY223WL --rcheck --seconds 10800 --reap -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.1.2:8080\" -m recent --name KUBE-SEP-TCHSYJU4C2SBUOO7 --rcheck --seconds 10800 --reap -j KUBE-SEP-TCHSYJU4C2SBUOO7\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.1.2:8080\" -j KUBE-SEP-TCHSYJU4C2SBUOO7\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -m recent --name KUBE-SEP-BJ753PBDBFY223WL --set -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -s 10.244.1.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -m recent --name KUBE-SEP-TCHSYJU4C2SBUOO7 --set -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn node_port_masquerades_and_uses_all_endpoints() {
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![Svc::new("ns1", "web", "10.96.0.10").type_("NodePort").port("http", "TCP", 80, Some(30080))],
            vec![web().ep("10.244.0.2", "node-a").ep("10.244.1.2", "node-b")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-EXT-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            ":KUBE-SEP-TCHSYJU4C2SBUOO7 - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            "-A KUBE-NODEPORTS -m comment --comment \"ns1/web:http\" -p tcp -m tcp --dport 30080 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            masq_rules!(),
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"masquerade traffic for ns1/web:http external destinations\" -j KUBE-MARK-MASQ\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http\" -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.1.2:8080\" -j KUBE-SEP-TCHSYJU4C2SBUOO7\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -s 10.244.1.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn node_port_with_local_external_policy_keeps_the_source_and_uses_local_endpoints() {
        // Pods and the node itself (including 127.0.0.1, masqueraded) may use every endpoint; outside clients only the local one.
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![
                Svc::new("ns1", "web", "10.96.0.10")
                    .type_("NodePort")
                    .port("http", "TCP", 80, Some(30080))
                    .etp_local(None),
            ],
            vec![web().ep("10.244.0.2", "node-a").ep("10.244.1.2", "node-b")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-EXT-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVL-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            ":KUBE-SEP-TCHSYJU4C2SBUOO7 - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            "-A KUBE-NODEPORTS -m comment --comment \"ns1/web:http\" -p tcp -m tcp --dport 30080 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            masq_rules!(),
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"pod traffic for ns1/web:http external destinations\" -s 10.244.0.0/16 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"masquerade LOCAL traffic for ns1/web:http external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"route LOCAL traffic for ns1/web:http external destinations\" -m addrtype --src-type LOCAL -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http\" -j KUBE-SVL-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.1.2:8080\" -j KUBE-SEP-TCHSYJU4C2SBUOO7\n",
            "-A KUBE-SVL-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -s 10.244.1.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn node_port_with_local_external_policy_and_no_local_endpoint_drops_outside_traffic() {
        // The EXT chain still short-circuits local traffic, but has no final jump; filter DROPs what falls through.
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![
                Svc::new("ns1", "web", "10.96.0.10")
                    .type_("NodePort")
                    .port("http", "TCP", 80, Some(30080))
                    .etp_local(None),
            ],
            vec![web().ep("10.244.1.2", "node-b")],
        );
        let want = concat!(
            filter_head!(),
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns1/web:http has no local endpoints\" -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j DROP\n",
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-EXT-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-TCHSYJU4C2SBUOO7 - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            "-A KUBE-NODEPORTS -m comment --comment \"ns1/web:http\" -p tcp -m tcp --dport 30080 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            masq_rules!(),
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"pod traffic for ns1/web:http external destinations\" -s 10.244.0.0/16 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"masquerade LOCAL traffic for ns1/web:http external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"route LOCAL traffic for ns1/web:http external destinations\" -m addrtype --src-type LOCAL -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.1.2:8080\" -j KUBE-SEP-TCHSYJU4C2SBUOO7\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -s 10.244.1.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-TCHSYJU4C2SBUOO7 -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.1.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn internal_local_policy_uses_only_this_nodes_endpoints() {
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None).itp_local()],
            vec![web().ep("10.244.0.2", "node-a").ep("10.244.1.2", "node-b")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-SVL-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVL-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            masq_rules!(),
            "-A KUBE-SVL-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVL-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn internal_local_policy_without_local_endpoints_drops() {
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None).itp_local()],
            vec![web().ep("10.244.1.2", "node-b")],
        );
        let want = concat!(
            filter_head!(),
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http has no local endpoints\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j DROP\n",
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            nodeports_last!(),
            masq_rules!(),
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn external_ips_go_through_the_ext_chain() {
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None).external_ips(&["192.0.2.50"])],
            vec![web().ep("10.244.0.2", "node-a")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-EXT-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http external IP\" -d 192.0.2.50/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            masq_rules!(),
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"masquerade traffic for ns1/web:http external destinations\" -j KUBE-MARK-MASQ\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http\" -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn load_balancer_ingress_ips_go_through_the_ext_chain() {
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![
                Svc::new("ns1", "web", "10.96.0.10")
                    .type_("LoadBalancer")
                    .port("http", "TCP", 80, Some(30080))
                    .ingress(&[("192.0.2.10", None)]),
            ],
            vec![web().ep("10.244.0.2", "node-a")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-EXT-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http loadbalancer IP\" -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            "-A KUBE-NODEPORTS -m comment --comment \"ns1/web:http\" -p tcp -m tcp --dport 30080 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            masq_rules!(),
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"masquerade traffic for ns1/web:http external destinations\" -j KUBE-MARK-MASQ\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http\" -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn load_balancer_with_local_policy_accepts_its_health_check_port() {
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![
                Svc::new("ns1", "web", "10.96.0.10")
                    .type_("LoadBalancer")
                    .port("http", "TCP", 80, Some(30080))
                    .etp_local(Some(32000))
                    .ingress(&[("192.0.2.10", None)]),
            ],
            vec![web().ep("10.244.0.2", "node-a")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            "-A KUBE-NODEPORTS -m comment --comment \"ns1/web:http health check node port\" -p tcp -m tcp --dport 32000 -j ACCEPT\n",
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-EXT-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVL-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http loadbalancer IP\" -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            "-A KUBE-NODEPORTS -m comment --comment \"ns1/web:http\" -p tcp -m tcp --dport 30080 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            masq_rules!(),
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"pod traffic for ns1/web:http external destinations\" -s 10.244.0.0/16 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"masquerade LOCAL traffic for ns1/web:http external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"route LOCAL traffic for ns1/web:http external destinations\" -m addrtype --src-type LOCAL -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http\" -j KUBE-SVL-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SVL-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn load_balancer_source_ranges_filter_through_the_fw_chain() {
        // The second range holds the node's own address, so the load-balancer IP itself is allowed as a source too.
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![
                Svc::new("ns1", "web", "10.96.0.10")
                    .type_("LoadBalancer")
                    .port("http", "TCP", 80, Some(30080))
                    .ingress(&[("192.0.2.10", None)])
                    .source_ranges(&["203.0.113.0/24", "192.168.1.0/24"]),
            ],
            vec![web().ep("10.244.0.2", "node-a")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            "-A KUBE-PROXY-FIREWALL -m comment --comment \"ns1/web:http traffic not accepted by KUBE-FW-4LVCYZMTA5CQO6SX\" -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j DROP\n",
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-EXT-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-FW-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http loadbalancer IP\" -d 192.0.2.10/32 -p tcp -m tcp --dport 80 -j KUBE-FW-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            "-A KUBE-NODEPORTS -m comment --comment \"ns1/web:http\" -p tcp -m tcp --dport 30080 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            masq_rules!(),
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"masquerade traffic for ns1/web:http external destinations\" -j KUBE-MARK-MASQ\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http\" -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-FW-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http loadbalancer IP\" -s 203.0.113.0/24 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-FW-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http loadbalancer IP\" -s 192.168.1.0/24 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-FW-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http loadbalancer IP\" -s 192.0.2.10/32 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-FW-4LVCYZMTA5CQO6SX -m comment --comment \"other traffic to ns1/web:http will be dropped by KUBE-PROXY-FIREWALL\"\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn falls_back_to_serving_terminating_endpoints() {
        // No ready endpoint: the serving terminating one is used; the one that stopped serving and the unready one are not.
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None)],
            vec![
                web()
                    .ep_with("10.244.0.2", "node-a", (false, true, true))
                    .ep_with("10.244.1.2", "node-b", (false, false, true))
                    .ep_with("10.244.2.2", "node-b", (false, false, false)),
            ],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            nodeports_last!(),
            masq_rules!(),
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn udp_service_matches_udp() {
        let got = text(
            vec![Svc::new("kube-system", "kube-dns", "10.96.0.10").port("dns", "UDP", 53, None)],
            vec![
                Slice::new("kube-system", "kube-dns-1", "kube-dns").port("dns", "UDP", 5353).ep("10.244.0.5", "node-a"),
            ],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-SVC-TCOU7JCQXEZGVUNU - [0:0]\n",
            ":KUBE-SEP-ESNJXRRA63VIIJGT - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"kube-system/kube-dns:dns cluster IP\" -d 10.96.0.10/32 -p udp -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU\n",
            nodeports_last!(),
            masq_rules!(),
            "-A KUBE-SVC-TCOU7JCQXEZGVUNU -m comment --comment \"kube-system/kube-dns:dns cluster IP\" -d 10.96.0.10/32 -p udp -m udp --dport 53 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-TCOU7JCQXEZGVUNU -m comment --comment \"kube-system/kube-dns:dns -> 10.244.0.5:5353\" -j KUBE-SEP-ESNJXRRA63VIIJGT\n",
            "-A KUBE-SEP-ESNJXRRA63VIIJGT -m comment --comment \"kube-system/kube-dns:dns\" -s 10.244.0.5/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-ESNJXRRA63VIIJGT -m comment --comment \"kube-system/kube-dns:dns\" -p udp -m udp -j DNAT --to-destination 10.244.0.5:5353\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn each_port_of_a_service_gets_its_own_chains() {
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![Svc::new("ns1", "web", "10.96.0.10").port("http", "TCP", 80, None).port("https", "TCP", 443, None)],
            vec![web().port("https", "TCP", 8443).ep("10.244.0.2", "node-a")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            ":KUBE-SVC-AI7VONCETSESNZE7 - [0:0]\n",
            ":KUBE-SEP-A2DLFO7F3VBRFQ3G - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:https cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 443 -j KUBE-SVC-AI7VONCETSESNZE7\n",
            nodeports_last!(),
            masq_rules!(),
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "-A KUBE-SVC-AI7VONCETSESNZE7 -m comment --comment \"ns1/web:https cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 443 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-AI7VONCETSESNZE7 -m comment --comment \"ns1/web:https -> 10.244.0.2:8443\" -j KUBE-SEP-A2DLFO7F3VBRFQ3G\n",
            "-A KUBE-SEP-A2DLFO7F3VBRFQ3G -m comment --comment \"ns1/web:https\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-A2DLFO7F3VBRFQ3G -m comment --comment \"ns1/web:https\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8443\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn headless_and_external_name_services_render_only_the_fixed_chains() {
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let got = text(
            vec![
                Svc::new("ns1", "web", "None").port("http", "TCP", 80, None),
                Svc::new("ns1", "ext", "").type_("ExternalName").port("http", "TCP", 80, None),
            ],
            vec![web().ep("10.244.0.2", "node-a")],
        );
        let want = concat!(
            filter_head!(),
            forward_rules!(),
            localnet_guard!(),
            "COMMIT\n",
            nat_head!(),
            nodeports_last!(),
            masq_rules!(),
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn without_cluster_cidr_or_loopback_node_ports_and_with_masquerade_all() {
        // No local-traffic detection, masquerade everything to the cluster IP, keep 127.0.0.0/8 out
        // of node ports, plain MASQUERADE, no INVALID drop.
        let plain = Config {
            cluster_cidr: None,
            masquerade_all: true,
            local_nodeport_loopback: false,
            masquerade_random_fully: false,
            conntrack_tcp_liberal: true,
            forward_accept_cluster_cidr: true,
            forward_hook: ForwardHook::Forward,
        };
        let web = || Slice::new("ns1", "web-1", "web").port("http", "TCP", 8080);
        let svc = Svc::new("ns1", "web", "10.96.0.10").type_("NodePort").port("http", "TCP", 80, Some(30080));
        let got = text_with(&plain, vec![svc], vec![web().ep("10.244.0.2", "node-a")]);
        let want = concat!(
            "*filter\n",
            ":KUBE-SERVICES - [0:0]\n",
            ":KUBE-EXTERNAL-SERVICES - [0:0]\n",
            ":KUBE-FORWARD - [0:0]\n",
            ":KUBE-NODEPORTS - [0:0]\n",
            ":KUBE-PROXY-FIREWALL - [0:0]\n",
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n",
            "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
            "COMMIT\n",
            nat_head!(),
            ":KUBE-EXT-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SVC-4LVCYZMTA5CQO6SX - [0:0]\n",
            ":KUBE-SEP-BJ753PBDBFY223WL - [0:0]\n",
            "-A KUBE-SERVICES -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS\n",
            "-A KUBE-NODEPORTS -m comment --comment \"ns1/web:http\" -p tcp -m tcp --dport 30080 -j KUBE-EXT-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE\n",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"masquerade traffic for ns1/web:http external destinations\" -j KUBE-MARK-MASQ\n",
            "-A KUBE-EXT-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http\" -j KUBE-SVC-4LVCYZMTA5CQO6SX\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http cluster IP\" -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SVC-4LVCYZMTA5CQO6SX -m comment --comment \"ns1/web:http -> 10.244.0.2:8080\" -j KUBE-SEP-BJ753PBDBFY223WL\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -s 10.244.0.2/32 -j KUBE-MARK-MASQ\n",
            "-A KUBE-SEP-BJ753PBDBFY223WL -m comment --comment \"ns1/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.244.0.2:8080\n",
            "COMMIT\n",
        );
        assert_eq!(got, want);
    }

    #[test]
    fn chain_names_match_upstream_hashes() {
        // Values from upstream kube-proxy's own tests.
        assert_eq!(service_chain_name(SVC_PREFIX, "ns1/svc1:p80", "tcp"), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(service_chain_name(EXT_PREFIX, "ns1/svc1:p80", "tcp"), "KUBE-EXT-XPGD46QRK7WJZT7O");
        assert_eq!(endpoint_chain_name("ns1/svc1:p80", "tcp", "10.180.0.1:80"), "KUBE-SEP-SXIVWICOYRO3J4NJ");
    }

    #[test]
    fn probabilities_use_ten_decimals() {
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(7), "0.1428571429");
    }

    /// Many Services of every shape, in namespaces `ns0..`, with `n` endpoints each.
    fn mixed(n: usize) -> (Vec<Svc>, Vec<Slice>) {
        let mut services = Vec::new();
        let mut slices = Vec::new();
        for i in 0..8u8 {
            let ns = format!("ns{i}");
            let ip = format!("10.96.1.{i}");
            let base = Svc::new(&ns, "web", &ip).port("http", "TCP", 80, None).port("dns", "UDP", 53, None);
            let node_port = 30000 + i32::from(i);
            services.push(match i {
                0 => base,
                1 => base.affinity(Some(60)),
                2 => base.itp_local(),
                3 => base.type_("NodePort").port("np", "TCP", 8080, Some(node_port)),
                4 => base.type_("NodePort").port("np", "TCP", 8080, Some(node_port)).etp_local(None),
                5 => base.external_ips(&["192.0.2.5"]),
                6 => base
                    .type_("LoadBalancer")
                    .port("np", "TCP", 8080, Some(node_port))
                    .etp_local(Some(31000))
                    .ingress(&[("192.0.2.6", None)])
                    .source_ranges(&["203.0.113.0/24"]),
                _ => {
                    base.type_("LoadBalancer").port("np", "SCTP", 8080, Some(node_port)).ingress(&[("192.0.2.7", None)])
                }
            });
            let mut slice = Slice::new(&ns, "web-1", "web").port("http", "TCP", 8080).port("dns", "UDP", 5353).port(
                "np",
                if i == 7 { "SCTP" } else { "TCP" },
                8080,
            );
            for e in 0..n {
                let node = if e % 2 == 0 { "node-a" } else { "node-b" };
                slice = slice.ep(&format!("10.244.{i}.{}", e + 2), node);
            }
            slices.push(slice);
        }
        // Plus one Service without endpoints and one with only a terminating endpoint.
        services.push(Svc::new("ns9", "empty", "10.96.2.1").type_("NodePort").port("", "TCP", 80, Some(30100)));
        services.push(Svc::new("ns9", "ending", "10.96.2.2").port("", "TCP", 80, None));
        slices.push(Slice::new("ns9", "ending-1", "ending").port("", "TCP", 80).ep_with(
            "10.244.9.2",
            "node-b",
            (false, true, true),
        ));
        (services, slices)
    }

    const BUILTIN_TARGETS: &[&str] = &["ACCEPT", "DROP", "REJECT", "RETURN", "DNAT", "SNAT", "MARK", "MASQUERADE"];

    /// Checks one restore text: every chain is declared before use and named within the limit,
    /// and every jump goes to a built-in target or a chain declared in the same table.
    fn check_references(text: &str) {
        let mut declared: HashSet<String> = HashSet::new();
        let mut tables = 0;
        for line in text.lines() {
            if line.starts_with('*') {
                declared.clear();
                tables += 1;
            } else if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split(' ').next().unwrap_or_default();
                assert!(name.len() <= MAX_CHAIN_NAME, "chain name too long: {name}");
                declared.insert(name.to_string());
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let words: Vec<&str> = rule.split(' ').collect();
                assert!(declared.contains(words[0]), "rule in undeclared chain: {line}");
                if let Some(pos) = words.iter().position(|w| *w == "-j") {
                    let target = words[pos + 1];
                    assert!(
                        BUILTIN_TARGETS.contains(&target) || declared.contains(target),
                        "jump to undefined chain {target}: {line}"
                    );
                }
            } else if let Some(name) = line.strip_prefix("-X ") {
                assert!(declared.contains(name), "deleting an undeclared chain: {line}");
            } else {
                assert_eq!(line, "COMMIT", "unexpected line");
            }
        }
        assert!(tables >= 1);
    }

    #[test]
    fn every_jump_goes_to_a_declared_chain_or_builtin_target() {
        for n in [0, 1, 2, 5] {
            let (services, slices) = mixed(n);
            let text = text(services, slices);
            check_references(&text);
            assert!(text.starts_with("*filter\n"));
            assert!(text.ends_with("COMMIT\n"));
            assert_eq!(text.matches("COMMIT\n").count(), 2);
        }
    }

    #[test]
    fn node_ports_rule_is_last_in_kube_services() {
        let (services, slices) = mixed(2);
        let r = render(&ports(services, slices), &node(), &cfg());
        let rules = &r.nat.chain(KUBE_SERVICES).map(|c| c.rules.clone()).unwrap_or_default();
        assert!(rules.len() > 10);
        assert!(rules.last().is_some_and(|l| l.ends_with("-j KUBE-NODEPORTS")));
        assert_eq!(rules.iter().filter(|l| l.ends_with("-j KUBE-NODEPORTS")).count(), 1);
    }

    #[test]
    fn render_is_deterministic_whatever_the_input_order() {
        let (services, slices) = mixed(3);
        let a = text(services, slices);
        let (mut services, mut slices) = mixed(3);
        services.reverse();
        slices.reverse();
        for s in &mut slices {
            s.0.endpoints.reverse();
        }
        assert_eq!(a, text(services, slices));
    }

    fn rendered(services: Vec<Svc>, slices: Vec<Slice>) -> Rendered {
        render(&ports(services, slices), &node(), &cfg())
    }

    #[test]
    fn render_changed_of_identical_inputs_is_empty() {
        let (s1, e1) = mixed(2);
        let (s2, e2) = mixed(2);
        assert_eq!(render_changed(&rendered(s1, e1), &rendered(s2, e2)), "");
    }

    #[test]
    fn render_changed_for_one_endpoint_touches_only_that_service_port() {
        let (s1, e1) = mixed(2);
        let (s2, mut e2) = mixed(2);
        // ns0/web: replace endpoint 10.244.0.3 with 10.244.0.9 (all three of its ports change).
        e2[0].0.endpoints[1].addresses = vec!["10.244.0.9".into()];
        let prev = rendered(s1, e1);
        let next = rendered(s2, e2);
        let delta = render_changed(&prev, &next);

        let mut want_decl = HashSet::new();
        let mut want_deleted = Vec::new();
        for (port, proto, target) in [("http", "tcp", 8080), ("dns", "udp", 5353)] {
            let name = format!("ns0/web:{port}");
            want_decl.insert(service_chain_name(SVC_PREFIX, &name, proto));
            want_decl.insert(endpoint_chain_name(&name, proto, &format!("10.244.0.9:{target}")));
            let old = endpoint_chain_name(&name, proto, &format!("10.244.0.3:{target}"));
            want_decl.insert(old.clone());
            want_deleted.push(old);
        }
        let got_decl: HashSet<String> = delta
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(got_decl, want_decl);
        let mut got_deleted: Vec<String> =
            delta.lines().filter_map(|l| l.strip_prefix("-X ")).map(String::from).collect();
        got_deleted.sort();
        want_deleted.sort();
        assert_eq!(got_deleted, want_deleted);
        // Only the nat table is touched, and only that Service's rules are written.
        assert!(!delta.contains("*filter"));
        assert!(delta.lines().filter(|l| l.starts_with("-A ")).all(|l| l.contains("ns0/web:")));
    }

    #[test]
    fn render_changed_for_a_removed_service_rewrites_top_level_chains_and_deletes_its_chains() {
        let prev = rendered(
            vec![
                Svc::new("ns1", "a", "10.96.0.10").type_("NodePort").port("", "TCP", 80, Some(30080)),
                Svc::new("ns1", "b", "10.96.0.11").port("", "TCP", 80, None),
            ],
            vec![
                Slice::new("ns1", "a-1", "a").port("", "TCP", 80).ep("10.244.0.2", "node-a"),
                Slice::new("ns1", "b-1", "b").port("", "TCP", 80).ep("10.244.0.3", "node-a"),
            ],
        );
        let next = rendered(
            vec![Svc::new("ns1", "b", "10.96.0.11").port("", "TCP", 80, None)],
            vec![Slice::new("ns1", "b-1", "b").port("", "TCP", 80).ep("10.244.0.3", "node-a")],
        );
        let svc = service_chain_name(SVC_PREFIX, "ns1/a", "tcp");
        let ext = service_chain_name(EXT_PREFIX, "ns1/a", "tcp");
        let sep = endpoint_chain_name("ns1/a", "tcp", "10.244.0.2:80");
        let b_svc = service_chain_name(SVC_PREFIX, "ns1/b", "tcp");
        let mut stale = vec![ext.clone(), sep.clone(), svc.clone()];
        stale.sort();
        let want = format!(
            "*nat\n\
             :KUBE-SERVICES - [0:0]\n\
             :KUBE-NODEPORTS - [0:0]\n\
             :{0} - [0:0]\n\
             :{1} - [0:0]\n\
             :{2} - [0:0]\n\
             -A KUBE-SERVICES -m comment --comment \"ns1/b cluster IP\" -d 10.96.0.11/32 -p tcp -m tcp --dport 80 -j {b_svc}\n\
             -A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
             -X {0}\n\
             -X {1}\n\
             -X {2}\n\
             COMMIT\n",
            stale[0], stale[1], stale[2]
        );
        assert_eq!(render_changed(&prev, &next), want);
        let names = prev.nat.chain_names();
        assert_eq!(stale_chains(names.iter().map(String::as_str), &next), stale);
    }

    #[test]
    fn stale_chains_ignore_chains_of_other_owners() {
        let next = rendered(vec![], vec![]);
        let previous = ["DOCKER", "KUBE-SERVICES", "KUBE-SVC-AAAAAAAAAAAAAAAA", "KUBE-SEP-BBBBBBBBBBBBBBBB", "FOO"];
        assert_eq!(stale_chains(previous, &next), ["KUBE-SEP-BBBBBBBBBBBBBBBB", "KUBE-SVC-AAAAAAAAAAAAAAAA"]);
        let full = full_sync_text(&next, &stale_chains(previous, &next));
        check_references(&full);
        assert!(full.ends_with(
            ":KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n\
             -A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
             -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
             -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
             -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
             -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
             -X KUBE-SEP-BBBBBBBBBBBBBBBB\n-X KUBE-SVC-AAAAAAAAAAAAAAAA\nCOMMIT\n"
        ));
    }

    #[test]
    fn render_changed_flushes_but_keeps_a_dropped_fixed_chain() {
        let prev = rendered(vec![], vec![]);
        let next = render(&[], &node(), &Config { local_nodeport_loopback: false, ..cfg() });
        let delta = render_changed(&prev, &next);
        assert!(delta.contains(":KUBE-FIREWALL - [0:0]\n"));
        assert!(!delta.contains("-X KUBE-FIREWALL"));
    }

    #[test]
    fn jump_rules_hook_forward_chains_from_docker_user_by_default() {
        let rules = jump_rules(&cfg());
        let find = |target: &str| -> Vec<(&str, &str)> {
            rules.iter().filter(|r| r.args.last().is_some_and(|a| a == target)).map(|r| (r.table, r.chain)).collect()
        };
        assert_eq!(find(KUBE_FORWARD), [("filter", "DOCKER-USER")]);
        assert_eq!(find(KUBE_POSTROUTING), [("nat", "POSTROUTING")]);
        assert_eq!(find(KUBE_FIREWALL), [("filter", "INPUT"), ("filter", "OUTPUT")]);
        let services = find(KUBE_SERVICES);
        assert!(services.contains(&("nat", "PREROUTING")) && services.contains(&("nat", "OUTPUT")));
        assert_eq!(
            rules.iter().find(|r| r.chain == "PREROUTING").map(|r| r.args.clone()).unwrap_or_default(),
            ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]
        );

        let bare = jump_rules(&Config { forward_hook: ForwardHook::Forward, local_nodeport_loopback: false, ..cfg() });
        assert!(bare.iter().all(|r| r.chain != "DOCKER-USER"));
        assert!(bare.iter().all(|r| r.args.last().is_none_or(|a| a != KUBE_FIREWALL)));
    }

    #[test]
    fn comments_cannot_break_the_restore_syntax() {
        assert_eq!(comment("a\"b\nc"), "-m comment --comment \"abc\"");
    }
}
