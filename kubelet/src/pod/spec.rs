//! From a pod spec to CRI configs: the sandbox (hostname, DNS, ports, host network) and each
//! container (command, env, mounts, resources, security context), plus the kubelet-managed
//! /etc/hosts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use proto::cri;

use super::env::expand;

pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Node-wide settings the configs depend on.
#[derive(Clone, Debug)]
pub struct SpecContext {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub pod_logs_dir: PathBuf,
    pub root_dir: PathBuf,
    pub host_resolv: PathBuf,
    pub node_memory_bytes: i128,
}

pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_POD_NAME.into(), pod.metadata.name.clone().unwrap_or_default()),
        (LABEL_POD_NAMESPACE.into(), pod.metadata.namespace.clone().unwrap_or_default()),
        (LABEL_POD_UID.into(), pod.metadata.uid.clone().unwrap_or_default()),
    ])
}

pub fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

/// The pod's hostname: `spec.hostname` or its name, cut to 63 characters.
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = spec.hostname.filter(|h| !h.is_empty()).unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string()
}

fn parse_resolv(text: &str) -> cri::DnsConfig {
    let mut dns = cri::DnsConfig::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => dns.servers.extend(f.next().map(str::to_string)),
            Some("search") | Some("domain") => dns.searches = f.map(str::to_string).collect(),
            Some("options") => dns.options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

/// The pod's resolv.conf by `dnsPolicy` and `dnsConfig`, as upstream builds it.
pub fn dns_config(pod: &Pod, ctx: &SpecContext) -> cri::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let host = parse_resolv(&std::fs::read_to_string(&ctx.host_resolv).unwrap_or_default());
    let policy = spec.dns_policy.clone().unwrap_or_else(|| "ClusterFirst".into());
    let cluster = match policy.as_str() {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => spec.host_network != Some(true),
        _ => false,
    };
    let mut dns = if policy == "None" {
        cri::DnsConfig::default()
    } else if cluster && !ctx.cluster_dns.is_empty() {
        let d = &ctx.cluster_domain;
        let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
        searches.extend(host.searches.iter().filter(|s| !searches.contains(s)).cloned().collect::<Vec<_>>());
        cri::DnsConfig { servers: ctx.cluster_dns.clone(), searches, options: vec!["ndots:5".into()] }
    } else {
        host
    };
    if let Some(extra) = spec.dns_config {
        dns.servers.extend(extra.nameservers.unwrap_or_default());
        for s in extra.searches.unwrap_or_default() {
            if !dns.searches.contains(&s) {
                dns.searches.push(s);
            }
        }
        for o in extra.options.unwrap_or_default() {
            let name = o.name.clone().unwrap_or_default();
            dns.options.retain(|x| x.split(':').next() != Some(name.as_str()));
            dns.options.push(match o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    dns.searches.truncate(32);
    dns
}

/// The containers that run for the pod's lifetime: the app containers and the restartable
/// (sidecar) init containers that run alongside them. Their ports are the pod's host ports.
pub fn long_running_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    let sidecars = spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers.iter().chain(sidecars)
}

pub fn sandbox_config(pod: &Pod, attempt: u32, ctx: &SpecContext) -> cri::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let host_net = host_network(pod);
    let mut ports = Vec::new();
    for c in long_running_containers(&spec) {
        for p in c.ports.clone().unwrap_or_default() {
            if let Some(hp) = p.host_port.filter(|h| *h > 0) {
                ports.push(cri::PortMapping {
                    protocol: match p.protocol.as_deref() {
                        Some("UDP") => cri::Protocol::Udp,
                        Some("SCTP") => cri::Protocol::Sctp,
                        _ => cri::Protocol::Tcp,
                    } as i32,
                    container_port: p.container_port,
                    host_port: hp,
                    host_ip: p.host_ip.clone().unwrap_or_default(),
                });
            }
        }
    }
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.name, s.value))
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: ns.clone(),
            attempt,
        }),
        hostname: if host_net { String::new() } else { hostname(pod) },
        log_directory: ctx.pod_logs_dir.join(format!("{ns}_{name}_{uid}")).to_string_lossy().into_owned(),
        dns_config: Some(dns_config(pod, ctx)),
        port_mappings: if host_net { vec![] } else { ports },
        labels: pod_labels(pod),
        annotations: HashMap::new(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if host_net { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod } as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sysctls,
        }),
    }
}

/// The kubelet-managed /etc/hosts for a pod with IP `ip`.
pub fn hosts_file(pod: &Pod, ip: &str, cluster_domain: &str) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    if !ip.is_empty() {
        match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => out.push_str(&format!("{ip}\t{host}.{sub}.{ns}.svc.{cluster_domain}\t{host}\n")),
            None => out.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    let aliases = spec.host_aliases.unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            out.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.unwrap_or_default().join("\t")));
        }
    }
    out
}

pub fn termination_log_path(root: &Path, uid: &str, container: &str, attempt: u32) -> PathBuf {
    super::volumes::pod_dir(root, uid).join("containers").join(container).join(format!("{attempt}-termination-log"))
}

/// CPU and memory settings: shares from requests, quota and memory from limits, and the OOM
/// score by QoS class.
pub fn linux_resources(pod: &Pod, c: &Container, node_memory: i128) -> cri::LinuxContainerResources {
    let res = c.resources.clone().unwrap_or_default();
    let limits = res.limits.unwrap_or_default();
    let requests = res.requests.unwrap_or_default();
    let cpu_req = requests.get("cpu").or(limits.get("cpu")).and_then(|q| quantity::parse_milli(&q.0));
    let cpu_lim = limits.get("cpu").and_then(|q| quantity::parse_milli(&q.0));
    let mem_lim = limits.get("memory").and_then(|q| quantity::parse_units(&q.0));
    let mem_req = requests.get("memory").or(limits.get("memory")).and_then(|q| quantity::parse_units(&q.0));
    let period = 100_000i64;
    let oom = match super::status::qos_class(pod) {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let req = mem_req.unwrap_or(0);
            let score = if node_memory > 0 { 1000 - (1000 * req / node_memory) as i64 } else { 1000 };
            score.clamp(2, 999)
        }
    };
    cri::LinuxContainerResources {
        cpu_period: if cpu_lim.is_some() { period } else { 0 },
        cpu_quota: cpu_lim.map(|m| ((m as i64) * period / 1000).max(1000)).unwrap_or(0),
        cpu_shares: cpu_req.map(|m| ((m as i64) * 1024 / 1000).max(2)).unwrap_or(2),
        memory_limit_in_bytes: mem_lim.map(|b| b as i64).unwrap_or(0),
        oom_score_adj: oom,
        ..Default::default()
    }
}

pub fn security_context(pod: &Pod, c: &Container) -> cri::LinuxContainerSecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    let strip = |v: Option<Vec<String>>| -> Vec<String> {
        v.unwrap_or_default().into_iter().map(|c| c.trim_start_matches("CAP_").to_uppercase()).collect()
    };
    let mut groups = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(g) = psc.fs_group {
        groups.push(g);
    }
    cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability { add_capabilities: strip(caps.add), drop_capabilities: strip(caps.drop) }),
        privileged: sc.privileged == Some(true),
        namespace_options: None,
        run_as_user: sc.run_as_user.or(psc.run_as_user).map(|value| cri::Int64Value { value }),
        run_as_username: String::new(),
        readonly_rootfs: sc.read_only_root_filesystem == Some(true),
        supplemental_groups: groups,
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        run_as_group: sc.run_as_group.or(psc.run_as_group).map(|value| cri::Int64Value { value }),
    }
}

/// The container's command and args with `$(VAR)` expanded from its environment.
pub fn command_and_args(c: &Container, env: &[(String, String)]) -> (Vec<String>, Vec<String>) {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |n: &str| vars.get(n).map(|v| v.to_string());
    let ex = |v: Option<Vec<String>>| v.unwrap_or_default().iter().map(|a| expand(a, &lookup)).collect::<Vec<_>>();
    (ex(c.command.clone()), ex(c.args.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    fn ctx(dir: &Path) -> SpecContext {
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n").expect("resolv");
        SpecContext {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            pod_logs_dir: dir.join("logs"),
            root_dir: dir.to_path_buf(),
            host_resolv: resolv,
            node_memory_bytes: 1 << 30,
        }
    }

    #[test]
    fn dns_follows_the_policy() {
        let dir = std::env::temp_dir().join(format!("kubelet-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let c = ctx(&dir);
        let p = pod(serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": []}}));
        let d = dns_config(&p, &c);
        assert_eq!(d.servers, vec!["10.96.0.10"]);
        assert_eq!(d.searches, vec!["ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]);
        assert_eq!(d.options, vec!["ndots:5"]);
        let host = pod(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"hostNetwork": true, "containers": []}}),
        );
        assert_eq!(dns_config(&host, &c).servers, vec!["192.0.2.53"]);
        let with_host_net = pod(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet", "containers": []}}),
        );
        assert_eq!(dns_config(&with_host_net, &c).servers, vec!["10.96.0.10"]);
        let none = pod(
            serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}, "containers": []}}),
        );
        let d = dns_config(&none, &c);
        assert_eq!(d.servers, vec!["1.2.3.4"]);
        assert_eq!(d.searches, vec!["a.b"]);
        assert_eq!(d.options, vec!["ndots:2", "edns0"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hosts_file_names_the_pod_and_aliases() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "web-0", "namespace": "ns"}, "spec": {"subdomain": "web", "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["foo", "bar"]}], "containers": []}}),
        );
        let h = hosts_file(&p, "10.244.0.7", "cluster.local");
        assert!(h.contains("10.244.0.7\tweb-0.web.ns.svc.cluster.local\tweb-0\n"), "{h}");
        assert!(h.contains("1.2.3.4\tfoo\tbar\n"), "{h}");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn resources_map_to_shares_quota_and_memory() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}}),
        );
        let c = p.spec.as_ref().expect("spec").containers[0].clone();
        let r = linux_resources(&p, &c, 1 << 30);
        assert_eq!(r.cpu_shares, 512);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.oom_score_adj, -997);
        let best = pod(serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}));
        let c = best.spec.as_ref().expect("spec").containers[0].clone();
        let r = linux_resources(&best, &c, 1 << 30);
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes, r.oom_score_adj), (2, 0, 0, 1000));
    }

    #[test]
    fn host_ports_of_containers_and_sidecars_are_mapped_and_host_network_maps_none() {
        let dir = std::env::temp_dir().join(format!("kubelet-spec-ports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let spec = serde_json::json!({
            "initContainers": [
                {"name": "once", "ports": [{"containerPort": 1, "hostPort": 7001}]},
                {"name": "sidecar", "restartPolicy": "Always", "ports": [{"containerPort": 2, "hostPort": 7002}]}],
            "containers": [{"name": "c", "ports": [
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.1"},
                {"containerPort": 81}]}]});
        let p = pod(serde_json::json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec}));
        let mapped: Vec<(i32, i32, i32, String)> = sandbox_config(&p, 0, &ctx(&dir))
            .port_mappings
            .into_iter()
            .map(|m| (m.protocol, m.container_port, m.host_port, m.host_ip))
            .collect();
        assert_eq!(
            mapped,
            [
                (cri::Protocol::Udp as i32, 53, 5353, "127.0.0.1".into()),
                (cri::Protocol::Tcp as i32, 2, 7002, String::new())
            ]
        );
        let mut host = p.clone();
        host.spec.as_mut().expect("spec").host_network = Some(true);
        assert!(sandbox_config(&host, 0, &ctx(&dir)).port_mappings.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn command_and_args_expand_from_env() {
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c", "command": ["sh", "-c", "echo $(GREETING) $$(NOT)"], "args": ["$(MISSING)"]})).expect("c");
        let (cmd, args) = command_and_args(&c, &[("GREETING".into(), "hi".into())]);
        assert_eq!(cmd, vec!["sh", "-c", "echo hi $(NOT)"]);
        assert_eq!(args, vec!["$(MISSING)"]);
    }
}
