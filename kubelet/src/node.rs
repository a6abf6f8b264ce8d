//! The Node: registration, status (capacity from the machine, conditions from the machine and the
//! runtime), and the heartbeat Lease in `kube-node-lease`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::cri::Cri;
use crate::pod::env::NodeAllocatable;
use proto::cri;

pub const KUBELET_VERSION: &str = "v1.33.0";

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub node_ip: String,
    pub max_pods: i64,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub pod_cidr: Option<String>,
    pub port: i32,
    pub root_dir: std::path::PathBuf,
}

/// What the machine has.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpus: i64,
    pub memory_bytes: i64,
    pub memory_available_bytes: i64,
    pub disk_bytes: i64,
    pub disk_available_bytes: i64,
    pub pids: i64,
    pub pid_max: i64,
}

fn meminfo(field: &str) -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse::<i64>().ok().map(|kib| kib * 1024)
}

/// Size and free space of the filesystem holding `path`, from `df` (no statvfs without unsafe).
fn disk(path: &std::path::Path) -> Option<(i64, i64)> {
    let out = std::process::Command::new("df").arg("-Pk").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.lines().nth(1)?.split_whitespace().collect();
    Some((f.get(1)?.parse::<i64>().ok()? * 1024, f.get(3)?.parse::<i64>().ok()? * 1024))
}

pub fn machine(root: &std::path::Path) -> Machine {
    let (disk_bytes, disk_available_bytes) = disk(root).unwrap_or((0, 0));
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1),
        memory_bytes: meminfo("MemTotal:").unwrap_or(0),
        memory_available_bytes: meminfo("MemAvailable:").unwrap_or(0),
        disk_bytes,
        disk_available_bytes,
        pids: std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten().filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit())).count()
                    as i64
            })
            .unwrap_or(0),
        pid_max: std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768),
    }
}

/// Eviction thresholds as upstream's defaults: memory.available<100Mi, nodefs.available<10%.
const MEMORY_RESERVE: i64 = 100 << 20;

pub fn allocatable(m: &Machine) -> NodeAllocatable {
    NodeAllocatable {
        cpu_milli: m.cpus as i128 * 1000,
        memory_bytes: (m.memory_bytes - MEMORY_RESERVE).max(0) as i128,
        ephemeral_storage_bytes: (m.disk_bytes * 9 / 10) as i128,
    }
}

/// This machine's address toward the rest of the network: the source address the kernel would
/// pick for a non-local destination (a UDP connect sends nothing).
pub fn detect_node_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.254:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn condition(
    type_: &str,
    ok_is_true: bool,
    ok: bool,
    reason: (&str, &str),
    message: String,
    previous: &[NodeCondition],
    now: &Time,
) -> NodeCondition {
    let status = if ok == ok_is_true { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(if ok { reason.0 } else { reason.1 }.into()),
        message: Some(message),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(since),
    }
}

/// The runtime's readiness: `Ok` or the message for the Ready condition.
pub async fn runtime_ready(cri: &Cri) -> Result<(), String> {
    let status = cri
        .status(cri::StatusRequest { verbose: false })
        .await
        .map_err(|e| format!("container runtime is down: {}", e.message()))?;
    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
    for c in conditions {
        if !c.status {
            let what = if c.r#type == "NetworkReady" { "network" } else { "runtime" };
            return Err(format!(
                "container runtime {what} not ready: {}=false reason:{} message:{}",
                c.r#type, c.reason, c.message
            ));
        }
    }
    Ok(())
}

pub async fn node_status(cfg: &NodeConfig, cri: &Cri, m: &Machine, previous: &[NodeCondition]) -> NodeStatus {
    let now = Time(jiff::Timestamp::now());
    let q = |v: String| Quantity(v);
    let capacity = BTreeMap::from([
        ("cpu".to_string(), q(m.cpus.to_string())),
        ("memory".to_string(), q(format!("{}Ki", m.memory_bytes / 1024))),
        ("pods".to_string(), q(cfg.max_pods.to_string())),
        ("ephemeral-storage".to_string(), q(format!("{}Ki", m.disk_bytes / 1024))),
    ]);
    let alloc = allocatable(m);
    let allocatable = BTreeMap::from([
        ("cpu".to_string(), q(m.cpus.to_string())),
        ("memory".to_string(), q(format!("{}Ki", alloc.memory_bytes / 1024))),
        ("pods".to_string(), q(cfg.max_pods.to_string())),
        ("ephemeral-storage".to_string(), q(alloc.ephemeral_storage_bytes.to_string())),
    ]);
    let ready = runtime_ready(cri).await;
    let version = cri.version(cri::VersionRequest::default()).await.ok();
    let images = node_images(cri).await;
    let memory_ok = m.memory_available_bytes >= MEMORY_RESERVE || m.memory_bytes == 0;
    let disk_ok = m.disk_bytes == 0 || m.disk_available_bytes * 10 >= m.disk_bytes;
    let pid_ok = m.pids * 10 < m.pid_max * 9;
    let conditions = vec![
        condition(
            "MemoryPressure",
            false,
            memory_ok,
            ("KubeletHasSufficientMemory", "KubeletHasInsufficientMemory"),
            if memory_ok {
                "kubelet has sufficient memory available".into()
            } else {
                "kubelet has insufficient memory available".into()
            },
            previous,
            &now,
        ),
        condition(
            "DiskPressure",
            false,
            disk_ok,
            ("KubeletHasNoDiskPressure", "KubeletHasDiskPressure"),
            if disk_ok { "kubelet has no disk pressure".into() } else { "kubelet has disk pressure".into() },
            previous,
            &now,
        ),
        condition(
            "PIDPressure",
            false,
            pid_ok,
            ("KubeletHasSufficientPID", "KubeletHasInsufficientPID"),
            if pid_ok {
                "kubelet has sufficient PID available".into()
            } else {
                "kubelet has insufficient PID available".into()
            },
            previous,
            &now,
        ),
        condition(
            "Ready",
            true,
            ready.is_ok(),
            ("KubeletReady", "KubeletNotReady"),
            ready.err().unwrap_or_else(|| "kubelet is posting ready status".into()),
            previous,
            &now,
        ),
    ];
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        images,
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: cfg.node_ip.clone() },
            NodeAddress { type_: "Hostname".into(), address: cfg.name.clone() },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: cfg.port }) }),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: version
                .map(|v| format!("{}://{}", v.runtime_name, v.runtime_version))
                .unwrap_or_default(),
            kernel_version: read_trim("/proc/sys/kernel/osrelease"),
            kube_proxy_version: KUBELET_VERSION.into(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: read_trim("/etc/machine-id"),
            operating_system: "linux".into(),
            os_image: os_image(),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Upstream's nodeStatusMaxImages: the largest 50 images are reported.
const MAX_IMAGES: usize = 50;

/// The images on the node, largest first, each with its tags and digests as names (what the
/// scheduler's ImageLocality scores).
async fn node_images(cri: &Cri) -> Option<Vec<ContainerImage>> {
    let mut images = match cri.list_images(cri::ListImagesRequest::default()).await {
        Ok(r) => r.images,
        Err(e) => {
            tracing::warn!(error = %e, "could not list the node's images");
            return None;
        }
    };
    images.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
    let images: Vec<ContainerImage> = images
        .into_iter()
        .filter(|i| !i.repo_tags.is_empty() || !i.repo_digests.is_empty())
        .take(MAX_IMAGES)
        .map(|i| ContainerImage {
            names: Some(i.repo_tags.into_iter().chain(i.repo_digests).collect()),
            size_bytes: Some(i.size as i64),
        })
        .collect();
    Some(images)
}

/// Creates the Node, or takes over an existing one of the same name (a restarted kubelet).
pub async fn register(client: &kube::Client, cfg: &NodeConfig) -> Result<Node, kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), cfg.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "kubernetes.io/arch".to_string(),
            std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        ),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "beta.kubernetes.io/arch".to_string(),
            std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        ),
    ]);
    labels.extend(cfg.labels.clone());
    let node = Node {
        metadata: ObjectMeta { name: Some(cfg.name.clone()), labels: Some(labels.clone()), ..Default::default() },
        spec: Some(NodeSpec {
            pod_cidr: cfg.pod_cidr.clone(),
            pod_cidrs: cfg.pod_cidr.clone().map(|c| vec![c]),
            taints: (!cfg.taints.is_empty()).then(|| cfg.taints.clone()),
            ..Default::default()
        }),
        status: None,
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(n) => Ok(n),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = serde_json::json!({"metadata": {"labels": labels}});
            api.patch(&cfg.name, &PatchParams::default(), &Patch::Merge(&patch)).await
        }
        Err(e) => Err(e),
    }
}

/// Renews `kube-node-lease/<node>` every 10 s (40 s lease), creating it when missing.
pub async fn lease_loop(client: kube::Client, node: String) {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    loop {
        let now = MicroTime(jiff::Timestamp::now());
        let result = match api.get_opt(&node).await {
            Ok(Some(_)) => {
                let patch =
                    serde_json::json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now}});
                api.patch(&node, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
            }
            Ok(None) => {
                let owner =
                    nodes.get_opt(&node).await.ok().flatten().and_then(|n| n.metadata.uid).map(|uid| OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: node.clone(),
                        uid,
                        ..Default::default()
                    });
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(node.clone()),
                        owner_references: owner.map(|o| vec![o]),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(node.clone()),
                        lease_duration_seconds: Some(40),
                        renew_time: Some(now),
                        ..Default::default()
                    }),
                };
                api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not renew the node lease");
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// Posts node status every 10 s when it changed, and at least every minute.
pub async fn status_loop(client: kube::Client, cfg: NodeConfig, cri: Cri) {
    let api: Api<Node> = Api::all(client);
    let mut last: Option<(String, std::time::Instant)> = None;
    // The conditions as posted (read once at start, then kept): transition times carry over.
    let mut previous: Vec<NodeCondition> = api
        .get_opt(&cfg.name)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.status)
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    loop {
        let m = machine(&cfg.root_dir);
        let status = node_status(&cfg, &cri, &m, &previous).await;
        // Compare without heartbeat times.
        let mut key = status.clone();
        for c in key.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        let key =
            serde_json::to_string(&(key.conditions, key.node_info, key.addresses, key.images)).unwrap_or_default();
        let due = last.as_ref().is_none_or(|(k, at)| *k != key || at.elapsed() >= Duration::from_secs(60));
        if due {
            let patch = serde_json::json!({"status": status});
            match api.patch_status(&cfg.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    last = Some((key, std::time::Instant::now()));
                    previous = status.conditions.clone().unwrap_or_default();
                }
                Err(e) => tracing::warn!(error = %e, "could not update node status"),
            }
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

/// The pod CIDR to use: `node.spec.podCIDR`, else `--pod-cidr`, waiting for the IPAM
/// controller to assign one when neither is there.
pub async fn wait_pod_cidr(client: &kube::Client, node: &str, flag: Option<&str>) -> String {
    let api: Api<Node> = Api::all(client.clone());
    let mut said = false;
    loop {
        if let Ok(Some(n)) = api.get_opt(node).await
            && let Some(cidr) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty())
        {
            return cidr;
        }
        if let Some(f) = flag.filter(|f| !f.is_empty()) {
            return f.to_string();
        }
        if !said {
            tracing::info!("waiting for node.spec.podCIDR (no --pod-cidr given)");
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Parses `--register-with-taints` (`key=value:Effect,key:Effect`).
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (kv, effect) =
            part.rsplit_once(':').ok_or_else(|| format!("invalid taint {part:?}: want key[=value]:Effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!("invalid taint effect {effect:?} in {part:?}"));
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (kv.to_string(), None),
        };
        if key.is_empty() {
            return Err(format!("invalid taint {part:?}: empty key"));
        }
        out.push(Taint { key, value, effect: effect.into(), time_added: None });
    }
    Ok(out)
}

/// Parses `--node-labels` (`k=v,k2=v2`).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("invalid label {part:?}: want key=value"))?;
        if k.is_empty() {
            return Err(format!("invalid label {part:?}: empty key"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_upstream() {
        let t = parse_taints("dedicated=gpu:NoSchedule, spot:PreferNoSchedule").expect("taints");
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].key.as_str(), t[0].value.as_deref(), t[0].effect.as_str()),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        assert_eq!((t[1].key.as_str(), t[1].value.as_deref()), ("spot", None));
        assert!(parse_taints("a=b:Sometimes").is_err());
        assert!(parse_taints("nokey").is_err());
        let l = parse_labels("zone=a,tier=web").expect("labels");
        assert_eq!(l.get("zone").map(String::as_str), Some("a"));
        assert!(parse_labels("bad").is_err());
    }

    #[test]
    fn the_machine_is_measured() {
        let m = machine(std::path::Path::new("/"));
        assert!(m.cpus >= 1);
        assert!(m.memory_bytes > 0 && m.memory_available_bytes > 0);
        assert!(m.disk_bytes > 0);
        assert!(m.pids > 0 && m.pid_max > m.pids);
    }
}
