//! CRI v1 on Docker, through `bollard` (the only module that talks to dockerd).
//!
//! A sandbox is a pause container holding the pod's network namespace and IP on this node's
//! bridge network; app containers join it with `NetworkMode: container:<sandbox>` and share its
//! IPC namespace, as dockershim did. Every container carries labels naming this runtime instance
//! (`rkube.instance`), so kubelets that share one dockerd (tests, simulated nodes) never see each
//! other's containers, and a restarted kubelet finds its own by listing them.
//!
//! Pod IPs are chosen here, never by Docker: the lowest address of the node's pod CIDR that no
//! container on the network holds and no sandbox being started has reserved. Docker refuses an
//! address twice ("Address already in use"); that sandbox is then retried on the next address.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig,
    NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListImagesOptions, RemoveContainerOptions,
    RemoveImageOptions, StatsOptions, StopContainerOptions,
};
use futures::StreamExt;
use proto::cri;
use proto::cri::image_service_server::ImageService;
use proto::cri::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::{now_nanos, resolv_conf};
use crate::streaming::{Backend, Process, StreamingServer, Target};
use std::sync::Arc;

/// Labels this runtime puts on every container it makes.
pub const LABEL_INSTANCE: &str = "rkube.instance";
const LABEL_KIND: &str = "rkube.kind";
const LABEL_SANDBOX: &str = "rkube.sandbox";
const LABEL_NAME: &str = "rkube.name";
const LABEL_NAMESPACE: &str = "rkube.namespace";
const LABEL_UID: &str = "rkube.uid";
const LABEL_CONTAINER: &str = "rkube.container";
const LABEL_ATTEMPT: &str = "rkube.attempt";
const LABEL_IMAGE: &str = "rkube.image";
const LABEL_LOG_DIR: &str = "rkube.log-dir";
const LABEL_LOG_PATH: &str = "rkube.log-path";
const LABEL_RESOLV: &str = "rkube.resolv-conf";
const LABEL_HOST_NETWORK: &str = "rkube.host-network";
const ANNOTATION_PREFIX: &str = "rkube.annotation.";
const KIND_SANDBOX: &str = "sandbox";
const KIND_CONTAINER: &str = "container";

#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// Names this runtime's containers and network (usually the node name).
    pub instance: String,
    /// Where sandbox files (resolv.conf) live; must be visible to dockerd at the same path.
    pub root_dir: PathBuf,
    /// The image of the pause container every sandbox runs.
    pub pause_image: String,
    /// Docker daemon address (`unix:///var/run/docker.sock` when empty).
    pub docker_host: String,
}

/// The node's pod network: one Docker bridge network for `node.spec.podCIDR`.
#[derive(Clone, Debug)]
struct PodNetwork {
    name: String,
    base: u32,
    prefix: u8,
}

impl PodNetwork {
    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
    fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
    /// Pod addresses in order: after the gateway, before the broadcast address.
    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix as u64);
        let last = (self.base as u64 + size - 1) as u32;
        (self.base + 2..last).map(Ipv4Addr::from)
    }
}

/// Parses `a.b.c.d/n` into its network address and prefix length.
pub fn parse_cidr(cidr: &str) -> Option<(u32, u8)> {
    let (ip, prefix) = cidr.trim().split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    if !(8..=30).contains(&prefix) {
        return None;
    }
    let mask = u32::MAX << (32 - prefix);
    Some((u32::from(ip) & mask, prefix))
}

/// Pod IPs in use: what sandboxes hold (learnt from Docker once, then kept up to date) and what
/// sandboxes being started have reserved.
#[derive(Default)]
struct IpState {
    taken: Option<HashSet<Ipv4Addr>>,
    reserved: HashSet<Ipv4Addr>,
}

const LABEL_IP: &str = "rkube.ip";

pub struct DockerRuntime {
    docker: Docker,
    cfg: DockerConfig,
    streaming: Arc<StreamingServer>,
    network: tokio::sync::RwLock<Option<PodNetwork>>,
    ips: Mutex<IpState>,
    /// Labels of sandboxes made by this process, so containers are created without an inspect.
    sandbox_labels: Mutex<HashMap<String, HashMap<String, String>>>,
    /// Where each new container's log link goes, until it starts.
    log_links: Mutex<HashMap<String, PathBuf>>,
    /// Docker's data root when it writes json-file logs (the log path is then known without an
    /// inspect).
    json_log_root: Option<PathBuf>,
    /// Whether this process holds CAP_SYS_RESOURCE (needed for negative oom_score_adj).
    can_lower_oom_score: bool,
}

fn status_of(e: DockerError) -> Status {
    match e {
        DockerError::DockerResponseServerError { status_code: 404, message } => Status::not_found(message),
        DockerError::DockerResponseServerError { status_code: 409, message } => Status::already_exists(message),
        DockerError::DockerResponseServerError { status_code: 400, message } => Status::invalid_argument(message),
        other => Status::internal(other.to_string()),
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

fn is_not_modified(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 304, .. })
}

/// RFC 3339 time from Docker as nanoseconds; Docker's zero time ("0001-01-01...") is 0.
fn nanos(t: Option<&str>) -> i64 {
    t.and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(|t| t.as_nanosecond() as i64).filter(|n| *n > 0).unwrap_or(0)
}

fn label<'a>(labels: &'a HashMap<String, String>, key: &str) -> &'a str {
    labels.get(key).map(String::as_str).unwrap_or("")
}

/// The CRI labels and annotations stored in Docker labels.
fn split_labels(all: &HashMap<String, String>) -> (HashMap<String, String>, HashMap<String, String>) {
    let mut labels = HashMap::new();
    let mut annotations = HashMap::new();
    for (k, v) in all {
        if let Some(a) = k.strip_prefix(ANNOTATION_PREFIX) {
            annotations.insert(a.to_string(), v.clone());
        } else if !k.starts_with("rkube.") {
            labels.insert(k.clone(), v.clone());
        }
    }
    (labels, annotations)
}

fn sandbox_metadata(labels: &HashMap<String, String>) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: label(labels, LABEL_NAME).into(),
        uid: label(labels, LABEL_UID).into(),
        namespace: label(labels, LABEL_NAMESPACE).into(),
        attempt: label(labels, LABEL_ATTEMPT).parse().unwrap_or(0),
    }
}

fn container_metadata(labels: &HashMap<String, String>) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: label(labels, LABEL_CONTAINER).into(),
        attempt: label(labels, LABEL_ATTEMPT).parse().unwrap_or(0),
    }
}

/// A Docker container name part: Docker allows `[a-zA-Z0-9][a-zA-Z0-9_.-]`.
/// Docker's `PortBindings` for a sandbox's hostPorts, keyed `<containerPort>/<proto>`. One
/// container port may be published on several host addresses or ports (hostIP 127.0.0.1 and
/// the node IP, say), so each key holds every binding: a map insert per mapping would keep only
/// the last and silently leave the others unreachable.
fn port_bindings(mappings: &[cri::PortMapping]) -> HashMap<String, Option<Vec<PortBinding>>> {
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in mappings.iter().filter(|p| p.host_port > 0) {
        let proto = match cri::Protocol::try_from(p.protocol).unwrap_or(cri::Protocol::Tcp) {
            cri::Protocol::Tcp => "tcp",
            cri::Protocol::Udp => "udp",
            cri::Protocol::Sctp => "sctp",
        };
        bindings.entry(format!("{}/{proto}", p.container_port)).or_default().get_or_insert_with(Vec::new).push(
            PortBinding {
                host_ip: (!p.host_ip.is_empty()).then(|| p.host_ip.clone()),
                host_port: Some(p.host_port.to_string()),
            },
        );
    }
    bindings
}

/// The pause container's create request. Every published port is also exposed: dockerd
/// publishes only the `PortBindings` whose port is in `ExposedPorts` (the docker CLI adds them
/// for `-p`; the API does not), so without this a hostPort is silently never bound.
fn sandbox_body(
    pause_image: &str,
    hostname: Option<&str>,
    labels: HashMap<String, String>,
    host_config: HostConfig,
    networking_config: Option<NetworkingConfig>,
) -> ContainerCreateBody {
    let exposed_ports = host_config.port_bindings.as_ref().map(|bindings| {
        let mut ports: Vec<String> = bindings.keys().cloned().collect();
        ports.sort();
        ports
    });
    ContainerCreateBody {
        image: Some(pause_image.to_string()),
        hostname: hostname.filter(|h| !h.is_empty()).map(str::to_string),
        labels: Some(labels),
        exposed_ports,
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    }
}

fn name_part(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

/// `repo` and `tag` of an image reference (`busybox` -> `busybox`, `latest`; a digest stays whole).
pub fn split_reference(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[slash..].rfind(':') {
        Some(i) => (image[..slash + i].to_string(), image[slash + i + 1..].to_string()),
        None => (image.to_string(), "latest".to_string()),
    }
}

/// The reference Docker stores for `image` (`busybox` is `busybox:latest`).
fn normalized(image: &str) -> String {
    if image.contains('@') {
        return image.to_string();
    }
    let (repo, tag) = split_reference(image);
    format!("{repo}:{tag}")
}

impl DockerRuntime {
    /// Connects to dockerd and negotiates the API version (Debian's 20.10 speaks 1.41).
    pub async fn connect(cfg: DockerConfig) -> anyhow::Result<Self> {
        let docker = if cfg.docker_host.is_empty() {
            Docker::connect_with_local_defaults()?
        } else {
            Docker::connect_with_host(&cfg.docker_host)?
        };
        let docker = docker
            .with_timeout(Duration::from_secs(300))
            .negotiate_version()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach dockerd: {e}"))?;
        docker.ping().await.map_err(|e| anyhow::anyhow!("dockerd does not answer: {e}"))?;
        let json_log_root = match docker.info().await {
            Ok(i) if i.logging_driver.as_deref() == Some("json-file") => i.docker_root_dir.map(PathBuf::from),
            _ => None,
        };
        let streams = DockerStreams { docker: docker.clone(), network: format!("kpods-{}", name_part(&cfg.instance)) };
        let streaming = StreamingServer::start(Arc::new(streams))
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the streaming server: {e}"))?;
        let rt = DockerRuntime {
            docker,
            cfg,
            streaming,
            network: tokio::sync::RwLock::new(None),
            ips: Mutex::new(IpState::default()),
            sandbox_labels: Mutex::new(HashMap::new()),
            log_links: Mutex::new(HashMap::new()),
            json_log_root,
            can_lower_oom_score: has_capability(24),
        };
        // A restarted runtime picks up the network it made before.
        if let Ok(net) = rt.docker.inspect_network(&rt.network_name(), None).await {
            let cidr = net.ipam.and_then(|i| i.config).and_then(|c| c.into_iter().find_map(|c| c.subnet));
            if let Some((base, prefix)) = cidr.as_deref().and_then(parse_cidr) {
                *rt.network.write().await = Some(PodNetwork { name: rt.network_name(), base, prefix });
            }
        }
        Ok(rt)
    }

    pub fn network_name(&self) -> String {
        format!("kpods-{}", name_part(&self.cfg.instance))
    }

    /// Linux allows 15 characters for an interface name.
    fn bridge_name(&self) -> String {
        let mut h: u32 = 2166136261;
        for b in self.cfg.instance.bytes() {
            h = (h ^ b as u32).wrapping_mul(16777619);
        }
        format!("kp-{h:08x}")
    }

    fn base_labels(&self, kind: &str) -> HashMap<String, String> {
        HashMap::from([(LABEL_INSTANCE.into(), self.cfg.instance.clone()), (LABEL_KIND.into(), kind.into())])
    }

    fn sandbox_dir(&self, name: &str) -> PathBuf {
        self.cfg.root_dir.join("sandboxes").join(name)
    }

    async fn ensure_network(&self, cidr: &str) -> Result<(), Status> {
        let (base, prefix) = parse_cidr(cidr)
            .ok_or_else(|| Status::invalid_argument(format!("pod CIDR {cidr:?} is not an IPv4 /8../30")))?;
        let wanted = PodNetwork { name: self.network_name(), base, prefix };
        let mut current = self.network.write().await;
        if let Some(net) = current.as_ref()
            && net.base == base
            && net.prefix == prefix
        {
            return Ok(());
        }
        match self.docker.inspect_network(&wanted.name, None).await {
            Ok(existing) => {
                let subnet = existing.ipam.and_then(|i| i.config).and_then(|c| c.into_iter().find_map(|c| c.subnet));
                if subnet.as_deref().and_then(parse_cidr) == Some((base, prefix)) {
                    *current = Some(wanted);
                    return Ok(());
                }
                // The pod CIDR changed: only an empty network may be replaced.
                self.docker.remove_network(&wanted.name).await.map_err(|e| {
                    Status::failed_precondition(format!(
                        "pod network {} has subnet {subnet:?}, not {cidr}, and cannot be replaced: {e}",
                        wanted.name
                    ))
                })?;
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(status_of(e)),
        }
        let mut labels = self.base_labels("network");
        labels.insert("rkube.pod-cidr".into(), wanted.cidr());
        let req = NetworkCreateRequest {
            name: wanted.name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig {
                    subnet: Some(wanted.cidr()),
                    gateway: Some(wanted.gateway().to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            options: Some(HashMap::from([
                ("com.docker.network.bridge.name".into(), self.bridge_name()),
                ("com.docker.network.bridge.enable_ip_masquerade".into(), "false".into()),
            ])),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker.create_network(req).await.map_err(status_of)?;
        tracing::info!(network = %wanted.name, cidr = %wanted.cidr(), bridge = %self.bridge_name(), "created the pod network");
        *current = Some(wanted);
        Ok(())
    }

    /// The addresses containers on the pod network hold, from Docker.
    async fn ips_in_use(&self, net: &PodNetwork) -> Result<HashSet<Ipv4Addr>, Status> {
        let inspect = self.docker.inspect_network(&net.name, None).await.map_err(status_of)?;
        let mut taken: HashSet<Ipv4Addr> = inspect
            .containers
            .unwrap_or_default()
            .values()
            .filter_map(|c| c.ipv4_address.as_deref())
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect();
        // Stopped sandboxes keep their address until they are removed.
        for c in self.list(KIND_SANDBOX, &HashMap::new()).await? {
            if let Some(ip) = c.labels.as_ref().and_then(|l| l.get(LABEL_IP)).and_then(|ip| ip.parse().ok()) {
                taken.insert(ip);
            }
        }
        Ok(taken)
    }

    /// Reserves the lowest address nobody holds. `skip` are addresses Docker just refused.
    async fn reserve_ip(&self, net: &PodNetwork, skip: &HashSet<Ipv4Addr>) -> Result<Ipv4Addr, Status> {
        let known = self.ips.lock().unwrap_or_else(|e| e.into_inner()).taken.is_some();
        if !known {
            let taken = self.ips_in_use(net).await?;
            self.ips.lock().unwrap_or_else(|e| e.into_inner()).taken.get_or_insert(taken);
        }
        for attempt in 0..2 {
            {
                let mut st = self.ips.lock().unwrap_or_else(|e| e.into_inner());
                let IpState { taken, reserved } = &mut *st;
                let taken = taken.get_or_insert_with(HashSet::new);
                if let Some(ip) =
                    net.hosts().find(|ip| !taken.contains(ip) && !reserved.contains(ip) && !skip.contains(ip))
                {
                    reserved.insert(ip);
                    return Ok(ip);
                }
            }
            if attempt == 0 {
                // Full: look again at what Docker really holds before giving up.
                let taken = self.ips_in_use(net).await?;
                self.ips.lock().unwrap_or_else(|e| e.into_inner()).taken = Some(taken);
            }
        }
        Err(Status::resource_exhausted(format!("no free pod IP left in {}", net.cidr())))
    }

    /// Ends a reservation; `held` when the sandbox now holds the address.
    fn release_ip(&self, ip: Ipv4Addr, held: bool) {
        let mut st = self.ips.lock().unwrap_or_else(|e| e.into_inner());
        st.reserved.remove(&ip);
        if held && let Some(t) = st.taken.as_mut() {
            t.insert(ip);
        }
    }

    fn forget_ip(&self, ip: Option<Ipv4Addr>) {
        if let Some(ip) = ip
            && let Some(t) = self.ips.lock().unwrap_or_else(|e| e.into_inner()).taken.as_mut()
        {
            t.remove(&ip);
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInspectResponse, Status> {
        self.docker.inspect_container(id, None).await.map_err(status_of)
    }

    async fn list(&self, kind: &str, extra: &HashMap<String, String>) -> Result<Vec<ContainerSummary>, Status> {
        let mut label_filters: Vec<String> = self.base_labels(kind).iter().map(|(k, v)| format!("{k}={v}")).collect();
        label_filters.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        let filters = HashMap::from([("label".to_string(), label_filters)]);
        let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        self.docker.list_containers(Some(opts)).await.map_err(status_of)
    }

    /// Sets `hairpin_mode` on the sandbox's host-side veth, so a pod reaches itself through a
    /// Service IP. Best effort: a read-only /sys (some nested setups) only costs hairpin traffic.
    fn set_hairpin(pid: i64) {
        let result = (|| -> std::io::Result<()> {
            let iflink = std::fs::read_to_string(format!("/proc/{pid}/root/sys/class/net/eth0/iflink"))?;
            let iflink = iflink.trim();
            for entry in std::fs::read_dir("/sys/class/net")? {
                let dir = entry?.path();
                if std::fs::read_to_string(dir.join("ifindex")).is_ok_and(|i| i.trim() == iflink) {
                    return std::fs::write(dir.join("brport/hairpin_mode"), "1");
                }
            }
            Err(std::io::Error::other("host veth not found"))
        })();
        if let Err(e) = result {
            tracing::warn!(pid, error = %e, "could not set hairpin_mode on the pod's veth");
        }
    }

    async fn run_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String, Status> {
        let meta = config.metadata.clone().ok_or_else(|| Status::invalid_argument("sandbox metadata is required"))?;
        let linux = config.linux.clone().unwrap_or_default();
        let sc = linux.security_context.clone().unwrap_or_default();
        let ns = sc.namespace_options.unwrap_or_default();
        let host_network = ns.network == cri::NamespaceMode::Node as i32;
        let name = format!(
            "k8s_POD_{}_{}_{}_{}",
            name_part(&meta.name),
            name_part(&meta.namespace),
            name_part(&meta.uid),
            meta.attempt
        );
        let mut labels = self.base_labels(KIND_SANDBOX);
        labels.extend(config.labels.clone());
        for (k, v) in &config.annotations {
            labels.insert(format!("{ANNOTATION_PREFIX}{k}"), v.clone());
        }
        labels.insert(LABEL_NAME.into(), meta.name.clone());
        labels.insert(LABEL_NAMESPACE.into(), meta.namespace.clone());
        labels.insert(LABEL_UID.into(), meta.uid.clone());
        labels.insert(LABEL_ATTEMPT.into(), meta.attempt.to_string());
        labels.insert(LABEL_LOG_DIR.into(), config.log_directory.clone());
        if host_network {
            labels.insert(LABEL_HOST_NETWORK.into(), "true".into());
        }
        if let Some(dns) = &config.dns_config
            && !dns.servers.is_empty()
        {
            let dir = self.sandbox_dir(&name);
            std::fs::create_dir_all(&dir).map_err(|e| Status::internal(format!("{}: {e}", dir.display())))?;
            let path = dir.join("resolv.conf");
            std::fs::write(&path, resolv_conf(dns))
                .map_err(|e| Status::internal(format!("{}: {e}", path.display())))?;
            labels.insert(LABEL_RESOLV.into(), path.to_string_lossy().into_owned());
        }
        if !config.log_directory.is_empty() {
            let _ = std::fs::create_dir_all(&config.log_directory);
        }
        let port_bindings = port_bindings(&config.port_mappings);
        let mut host_config = HostConfig {
            ipc_mode: Some("shareable".into()),
            cgroup_parent: (!linux.cgroup_parent.is_empty()).then(|| linux.cgroup_parent.clone()),
            sysctls: (!linux.sysctls.is_empty()).then(|| linux.sysctls.clone()),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            ..Default::default()
        };
        if host_network {
            host_config.network_mode = Some("host".into());
            return self.create_and_start_sandbox(&name, labels, host_config, None, None).await;
        }
        let net = self
            .network
            .read()
            .await
            .clone()
            .ok_or_else(|| Status::failed_precondition("the pod network is not set up yet: no pod CIDR"))?;
        host_config.network_mode = Some(net.name.clone());
        let mut refused = HashSet::new();
        for _ in 0..8 {
            let ip = self.reserve_ip(&net, &refused).await?;
            let mut with_ip = labels.clone();
            with_ip.insert(LABEL_IP.into(), ip.to_string());
            let result = self
                .create_and_start_sandbox(&name, with_ip, host_config.clone(), Some((&net, ip)), Some(&config.hostname))
                .await;
            self.release_ip(ip, result.is_ok());
            match result {
                Err(e) if e.message().contains("Address already in use") => {
                    tracing::info!(%ip, "Docker refused the pod IP; trying the next");
                    refused.insert(ip);
                }
                other => return other,
            }
        }
        Err(Status::resource_exhausted("Docker refused eight pod IPs in a row"))
    }

    async fn create_and_start_sandbox(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        host_config: HostConfig,
        ip: Option<(&PodNetwork, Ipv4Addr)>,
        hostname: Option<&str>,
    ) -> Result<String, Status> {
        let networking_config = ip.map(|(net, ip)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net.name.clone(),
                EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig { ipv4_address: Some(ip.to_string()), ..Default::default() }),
                    ..Default::default()
                },
            )])),
        });
        let body = sandbox_body(&self.cfg.pause_image, hostname, labels, host_config, networking_config);
        let opts = CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
        let labels = body.labels.clone().unwrap_or_default();
        let created = self.docker.create_container(Some(opts), body).await.map_err(status_of)?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.docker.remove_container(&created.id, Some(force())).await;
            return Err(status_of(e));
        }
        self.sandbox_labels.lock().unwrap_or_else(|e| e.into_inner()).insert(created.id.clone(), labels);
        if ip.is_some() {
            // Off the pod's start path: only Service hairpin traffic needs it.
            let docker = self.docker.clone();
            let id = created.id.clone();
            tokio::spawn(async move {
                if let Ok(info) = docker.inspect_container(&id, None).await
                    && let Some(pid) = info.state.and_then(|s| s.pid).filter(|p| *p > 0)
                {
                    Self::set_hairpin(pid);
                }
            });
        }
        Ok(created.id)
    }

    /// Lowering a process's OOM score needs CAP_SYS_RESOURCE (these VMs lack it, so runc fails
    /// with "can't get final child's PID"): without it negative scores become 0, and the runtime
    /// says so once.
    fn oom_score_adj(&self, wanted: i64) -> i64 {
        if wanted >= 0 || self.can_lower_oom_score {
            return wanted;
        }
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                "no CAP_SYS_RESOURCE: containers that should get a negative oom_score_adj (Guaranteed pods: -997) get 0"
            )
        });
        0
    }

    fn sandbox_ip(&self, info: &ContainerInspectResponse) -> String {
        info.network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.get(&self.network_name()))
            .and_then(|e| e.ip_address.clone())
            .unwrap_or_default()
    }

    async fn create_in_sandbox(&self, sandbox_id: &str, config: cri::ContainerConfig) -> Result<String, Status> {
        let cached = self.sandbox_labels.lock().unwrap_or_else(|e| e.into_inner()).get(sandbox_id).cloned();
        let (sandbox_id, sandbox_labels) = match cached {
            Some(l) => (sandbox_id.to_string(), l),
            None => {
                let sandbox = self.inspect(sandbox_id).await?;
                let labels = sandbox.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
                (sandbox.id.clone().unwrap_or_else(|| sandbox_id.to_string()), labels)
            }
        };
        if label(&sandbox_labels, LABEL_KIND) != KIND_SANDBOX {
            return Err(Status::not_found(format!("{sandbox_id} is not a pod sandbox")));
        }
        let meta = config.metadata.clone().ok_or_else(|| Status::invalid_argument("container metadata is required"))?;
        let image = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("container image is required"));
        }
        let pod = sandbox_metadata(&sandbox_labels);
        let name = format!(
            "k8s_{}_{}_{}_{}_{}",
            name_part(&meta.name),
            name_part(&pod.name),
            name_part(&pod.namespace),
            name_part(&pod.uid),
            meta.attempt
        );
        let mut labels = self.base_labels(KIND_CONTAINER);
        labels.extend(config.labels.clone());
        for (k, v) in &config.annotations {
            labels.insert(format!("{ANNOTATION_PREFIX}{k}"), v.clone());
        }
        labels.insert(LABEL_SANDBOX.into(), sandbox_id.clone());
        labels.insert(LABEL_CONTAINER.into(), meta.name.clone());
        labels.insert(LABEL_ATTEMPT.into(), meta.attempt.to_string());
        labels.insert(LABEL_IMAGE.into(), image.clone());
        let log_dir = label(&sandbox_labels, LABEL_LOG_DIR);
        let log_path = if log_dir.is_empty() || config.log_path.is_empty() {
            None
        } else {
            Some(Path::new(log_dir).join(&config.log_path))
        };
        if let Some(p) = &log_path {
            labels.insert(LABEL_LOG_PATH.into(), p.to_string_lossy().into_owned());
        }

        let mut binds: Vec<String> = config
            .mounts
            .iter()
            .map(|m| {
                let mut opts = vec![if m.readonly { "ro" } else { "rw" }];
                match cri::MountPropagation::try_from(m.propagation)
                    .unwrap_or(cri::MountPropagation::PropagationPrivate)
                {
                    cri::MountPropagation::PropagationPrivate => {}
                    cri::MountPropagation::PropagationHostToContainer => opts.push("rslave"),
                    cri::MountPropagation::PropagationBidirectional => opts.push("rshared"),
                }
                format!("{}:{}:{}", m.host_path, m.container_path, opts.join(","))
            })
            .collect();
        let resolv = label(&sandbox_labels, LABEL_RESOLV);
        if !resolv.is_empty() && !config.mounts.iter().any(|m| m.container_path == "/etc/resolv.conf") {
            binds.push(format!("{resolv}:/etc/resolv.conf:ro"));
        }
        let linux = config.linux.clone().unwrap_or_default();
        let res = linux.resources.unwrap_or_default();
        let sc = linux.security_context.unwrap_or_default();
        let caps = sc.capabilities.unwrap_or_default();
        let user = match (&sc.run_as_user, &sc.run_as_group) {
            (Some(u), Some(g)) => Some(format!("{}:{}", u.value, g.value)),
            (Some(u), None) => Some(u.value.to_string()),
            (None, _) if !sc.run_as_username.is_empty() => Some(sc.run_as_username.clone()),
            _ => None,
        };
        let host_network = label(&sandbox_labels, LABEL_HOST_NETWORK) == "true";
        let host_config = HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            network_mode: Some(if host_network { "host".into() } else { format!("container:{sandbox_id}") }),
            ipc_mode: Some(format!("container:{sandbox_id}")),
            cpu_period: (res.cpu_period > 0).then_some(res.cpu_period),
            cpu_quota: (res.cpu_quota > 0).then_some(res.cpu_quota),
            cpu_shares: (res.cpu_shares > 0).then_some(res.cpu_shares),
            memory: (res.memory_limit_in_bytes > 0).then_some(res.memory_limit_in_bytes),
            // Kubernetes has no swap for limited containers: swap limit = memory limit.
            memory_swap: (res.memory_limit_in_bytes > 0).then_some(res.memory_limit_in_bytes),
            oom_score_adj: Some(self.oom_score_adj(res.oom_score_adj)).filter(|v| *v != 0),
            cpuset_cpus: (!res.cpuset_cpus.is_empty()).then(|| res.cpuset_cpus.clone()),
            cpuset_mems: (!res.cpuset_mems.is_empty()).then(|| res.cpuset_mems.clone()),
            cap_add: (!caps.add_capabilities.is_empty()).then(|| caps.add_capabilities.clone()),
            cap_drop: (!caps.drop_capabilities.is_empty()).then(|| caps.drop_capabilities.clone()),
            privileged: sc.privileged.then_some(true),
            readonly_rootfs: sc.readonly_rootfs.then_some(true),
            group_add: (!sc.supplemental_groups.is_empty())
                .then(|| sc.supplemental_groups.iter().map(|g| g.to_string()).collect()),
            security_opt: sc.no_new_privs.then(|| vec!["no-new-privileges".to_string()]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image),
            entrypoint: (!config.command.is_empty()).then(|| config.command.clone()),
            cmd: (!config.args.is_empty()).then(|| config.args.clone()),
            env: Some(config.envs.iter().map(|kv| format!("{}={}", kv.key, kv.value)).collect()),
            working_dir: (!config.working_dir.is_empty()).then(|| config.working_dir.clone()),
            user,
            tty: Some(config.tty),
            open_stdin: Some(config.stdin),
            stdin_once: Some(config.stdin_once),
            attach_stdin: Some(config.stdin),
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let opts = CreateContainerOptions { name: Some(name), ..Default::default() };
        let created = self.docker.create_container(Some(opts), body).await.map_err(status_of)?;
        if let Some(link) = log_path {
            self.log_links.lock().unwrap_or_else(|e| e.into_inner()).insert(created.id.clone(), link);
        }
        Ok(created.id)
    }

    async fn exec_sync_inner(&self, req: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse, Status> {
        let exec = self
            .docker
            .create_exec(
                &req.container_id,
                CreateExecOptions::<String> {
                    cmd: Some(req.cmd.clone()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(status_of)?;
        let run = async {
            let mut stdout = Vec::new();
            let mut stderr = Vec::new();
            if let StartExecResults::Attached { mut output, .. } =
                self.docker.start_exec(&exec.id, None).await.map_err(status_of)?
            {
                while let Some(chunk) = output.next().await {
                    match chunk.map_err(status_of)? {
                        LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            stdout.extend_from_slice(&message)
                        }
                        LogOutput::StdIn { .. } => {}
                    }
                    // Probes read a bounded amount, as upstream (16 KiB per stream).
                    stdout.truncate(16 * 1024);
                    stderr.truncate(16 * 1024);
                }
            }
            let inspect = self.docker.inspect_exec(&exec.id).await.map_err(status_of)?;
            Ok::<_, Status>(cri::ExecSyncResponse { stdout, stderr, exit_code: inspect.exit_code.unwrap_or(0) as i32 })
        };
        if req.timeout > 0 {
            tokio::time::timeout(Duration::from_secs(req.timeout as u64), run)
                .await
                .map_err(|_| Status::deadline_exceeded(format!("command timed out after {}s", req.timeout)))?
        } else {
            run.await
        }
    }
}

/// A failed pull, classified: the registry refused us (PermissionDenied), has no such image
/// (NotFound), or could not be reached (Unavailable).
fn pull_error(message: String) -> Status {
    let m = message.to_lowercase();
    if ["unauthorized", "authentication required", "no basic auth credentials", "denied", "forbidden"]
        .iter()
        .any(|w| m.contains(w))
    {
        Status::permission_denied(message)
    } else if ["not found", "manifest unknown", "does not exist"].iter().any(|w| m.contains(w)) {
        Status::not_found(message)
    } else {
        Status::unavailable(message)
    }
}

/// Whether this process's effective capabilities include `bit` (CAP_SYS_RESOURCE is 24).
fn has_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        })
        .is_some_and(|caps| caps & (1 << bit) != 0)
}

fn force() -> RemoveContainerOptions {
    RemoveContainerOptions { force: true, v: true, ..Default::default() }
}

fn summary_state(s: Option<&ContainerSummaryStateEnum>) -> cri::ContainerState {
    match s {
        Some(ContainerSummaryStateEnum::CREATED) => cri::ContainerState::ContainerCreated,
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::PAUSED) => {
            cri::ContainerState::ContainerRunning
        }
        Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD) => {
            cri::ContainerState::ContainerExited
        }
        _ => cri::ContainerState::ContainerUnknown,
    }
}

fn inspect_state(s: Option<&ContainerStateStatusEnum>) -> cri::ContainerState {
    match s {
        Some(ContainerStateStatusEnum::CREATED) => cri::ContainerState::ContainerCreated,
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED) => {
            cri::ContainerState::ContainerRunning
        }
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => cri::ContainerState::ContainerExited,
        _ => cri::ContainerState::ContainerUnknown,
    }
}

#[tonic::async_trait]
impl RuntimeService for DockerRuntime {
    async fn version(&self, _: Request<cri::VersionRequest>) -> Result<Response<cri::VersionResponse>, Status> {
        let v = self.docker.version().await.map_err(status_of)?;
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "docker".into(),
            runtime_version: v.version.unwrap_or_default(),
            runtime_api_version: v.api_version.unwrap_or_default(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let config = req.into_inner().config.ok_or_else(|| Status::invalid_argument("sandbox config is required"))?;
        let id = self.run_sandbox(config).await?;
        Ok(Response::new(cri::RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let members = self.list(KIND_CONTAINER, &HashMap::from([(LABEL_SANDBOX.into(), id.clone())])).await?;
        for c in members.iter().filter(|c| summary_state(c.state.as_ref()) == cri::ContainerState::ContainerRunning) {
            if let Some(cid) = &c.id {
                match self
                    .docker
                    .stop_container(cid, Some(StopContainerOptions { t: Some(0), ..Default::default() }))
                    .await
                {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) || is_not_modified(&e) => {}
                    Err(e) => return Err(status_of(e)),
                }
            }
        }
        match self.docker.stop_container(&id, Some(StopContainerOptions { t: Some(0), ..Default::default() })).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) || is_not_modified(&e) => {}
            Err(e) => return Err(status_of(e)),
        }
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = req.into_inner().pod_sandbox_id;
        let members = self.list(KIND_CONTAINER, &HashMap::from([(LABEL_SANDBOX.into(), id.clone())])).await?;
        for c in members {
            if let Some(cid) = c.id {
                self.remove_one(&cid).await?;
            }
        }
        self.sandbox_labels.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        match self.docker.inspect_container(&id, None).await {
            Ok(info) => {
                let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
                self.forget_ip(labels.get(LABEL_IP).and_then(|ip| ip.parse().ok()));
                if let Some(name) = info.name {
                    let _ = std::fs::remove_dir_all(self.sandbox_dir(name.trim_start_matches('/')));
                }
                match self.docker.remove_container(&id, Some(force())).await {
                    Ok(()) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(status_of(e)),
                }
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(status_of(e)),
        }
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let info = self.inspect(&req.into_inner().pod_sandbox_id).await?;
        let all = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        if label(&all, LABEL_KIND) != KIND_SANDBOX || label(&all, LABEL_INSTANCE) != self.cfg.instance {
            return Err(Status::not_found("no such pod sandbox"));
        }
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        let host_network = label(&all, LABEL_HOST_NETWORK) == "true";
        let ip = if host_network { String::new() } else { self.sandbox_ip(&info) };
        let (labels, annotations) = split_labels(&all);
        let status = cri::PodSandboxStatus {
            id: info.id.clone().unwrap_or_default(),
            metadata: Some(sandbox_metadata(&all)),
            state: if running { cri::PodSandboxState::SandboxReady } else { cri::PodSandboxState::SandboxNotready }
                as i32,
            created_at: nanos(info.created.as_deref()),
            network: Some(cri::PodSandboxNetworkStatus { ip, additional_ips: vec![] }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network: if host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod } as i32,
                        ..Default::default()
                    }),
                }),
            }),
            labels,
            annotations,
            runtime_handler: String::new(),
        };
        Ok(Response::new(cri::PodSandboxStatusResponse { status: Some(status), info: HashMap::new() }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = req.into_inner().filter;
        let selector = filter.as_ref().map(|f| f.label_selector.clone()).unwrap_or_default();
        let items = self
            .list(KIND_SANDBOX, &selector)
            .await?
            .into_iter()
            .map(|c| {
                let all = c.labels.clone().unwrap_or_default();
                let (labels, annotations) = split_labels(&all);
                let running = summary_state(c.state.as_ref()) == cri::ContainerState::ContainerRunning;
                cri::PodSandbox {
                    id: c.id.clone().unwrap_or_default(),
                    metadata: Some(sandbox_metadata(&all)),
                    state: if running {
                        cri::PodSandboxState::SandboxReady
                    } else {
                        cri::PodSandboxState::SandboxNotready
                    } as i32,
                    created_at: c.created.unwrap_or(0) * 1_000_000_000,
                    labels,
                    annotations,
                    runtime_handler: String::new(),
                }
            })
            .filter(|s| super::sandbox_matches(s, &filter))
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let req = req.into_inner();
        let config = req.config.ok_or_else(|| Status::invalid_argument("container config is required"))?;
        let id = self.create_in_sandbox(&req.pod_sandbox_id, config).await?;
        Ok(Response::new(cri::CreateContainerResponse { container_id: id }))
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        self.docker.start_container(&id, None).await.map_err(status_of)?;
        // Docker names the log file at start: link it where the kubelet reads logs.
        let known = self.log_links.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        let (link, target) = match (known, &self.json_log_root) {
            (Some(link), Some(root)) if id.len() == 64 => {
                let target = root.join("containers").join(&id).join(format!("{id}-json.log"));
                (link, Some(target.to_string_lossy().into_owned()))
            }
            _ => {
                let info = self.inspect(&id).await?;
                let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
                (PathBuf::from(label(&labels, LABEL_LOG_PATH)), info.log_path)
            }
        };
        let link = link.as_path();
        if let Some(target) = target.filter(|p| !p.is_empty())
            && !link.as_os_str().is_empty()
        {
            if let Some(dir) = link.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::remove_file(link);
            if let Err(e) = std::os::unix::fs::symlink(&target, link) {
                tracing::warn!(link = %link.display(), error = %e, "could not link the container log");
            }
        }
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let req = req.into_inner();
        let t = req.timeout.clamp(0, i32::MAX as i64) as i32;
        match self
            .docker
            .stop_container(&req.container_id, Some(StopContainerOptions { t: Some(t), ..Default::default() }))
            .await
        {
            Ok(()) => Ok(Response::new(cri::StopContainerResponse {})),
            Err(e) if is_not_modified(&e) => Ok(Response::new(cri::StopContainerResponse {})),
            Err(e) => Err(status_of(e)),
        }
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        self.remove_one(&req.into_inner().container_id).await?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let filter = req.into_inner().filter;
        let mut selector = filter.as_ref().map(|f| f.label_selector.clone()).unwrap_or_default();
        if let Some(f) = &filter
            && !f.pod_sandbox_id.is_empty()
            && f.pod_sandbox_id.len() == 64
        {
            selector.insert(LABEL_SANDBOX.into(), f.pod_sandbox_id.clone());
        }
        let containers = self
            .list(KIND_CONTAINER, &selector)
            .await?
            .into_iter()
            .map(|c| {
                let all = c.labels.clone().unwrap_or_default();
                let (labels, annotations) = split_labels(&all);
                cri::Container {
                    id: c.id.clone().unwrap_or_default(),
                    pod_sandbox_id: label(&all, LABEL_SANDBOX).into(),
                    metadata: Some(container_metadata(&all)),
                    image: Some(cri::ImageSpec { image: label(&all, LABEL_IMAGE).into(), ..Default::default() }),
                    image_ref: c.image_id.clone().unwrap_or_default(),
                    state: summary_state(c.state.as_ref()) as i32,
                    created_at: c.created.unwrap_or(0) * 1_000_000_000,
                    labels,
                    annotations,
                    image_id: c.image_id.clone().unwrap_or_default(),
                }
            })
            .filter(|c| super::container_matches(c, &filter))
            .collect();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let info = self.inspect(&req.into_inner().container_id).await?;
        let all = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        if label(&all, LABEL_KIND) != KIND_CONTAINER || label(&all, LABEL_INSTANCE) != self.cfg.instance {
            return Err(Status::not_found("no such container"));
        }
        let state = info.state.clone().unwrap_or_default();
        let cri_state = inspect_state(state.status.as_ref());
        let exit_code = state.exit_code.unwrap_or(0) as i32;
        let reason = match cri_state {
            cri::ContainerState::ContainerExited if state.oom_killed == Some(true) => "OOMKilled",
            cri::ContainerState::ContainerExited if exit_code == 0 => "Completed",
            cri::ContainerState::ContainerExited => "Error",
            _ => "",
        };
        let (labels, annotations) = split_labels(&all);
        let mounts = info
            .mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| cri::Mount {
                container_path: m.destination.unwrap_or_default(),
                host_path: m.source.unwrap_or_default(),
                readonly: m.rw == Some(false),
                ..Default::default()
            })
            .collect();
        let status = cri::ContainerStatus {
            id: info.id.clone().unwrap_or_default(),
            metadata: Some(container_metadata(&all)),
            state: cri_state as i32,
            created_at: nanos(info.created.as_deref()),
            started_at: nanos(state.started_at.as_deref()),
            finished_at: if cri_state == cri::ContainerState::ContainerExited {
                nanos(state.finished_at.as_deref())
            } else {
                0
            },
            exit_code,
            image: Some(cri::ImageSpec { image: label(&all, LABEL_IMAGE).into(), ..Default::default() }),
            image_ref: info.image.clone().unwrap_or_default(),
            reason: reason.into(),
            message: state.error.clone().unwrap_or_default(),
            labels,
            annotations,
            mounts,
            log_path: label(&all, LABEL_LOG_PATH).into(),
            image_id: info.image.clone().unwrap_or_default(),
        };
        Ok(Response::new(cri::ContainerStatusResponse { status: Some(status), info: HashMap::new() }))
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> Result<Response<cri::ExecSyncResponse>, Status> {
        Ok(Response::new(self.exec_sync_inner(req.into_inner()).await?))
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> Result<Response<cri::ExecResponse>, Status> {
        let r = req.into_inner();
        self.running_container(&r.container_id).await?;
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd must not be empty"));
        }
        let url = self.streaming.url(Target::Exec {
            container: r.container_id,
            cmd: r.cmd,
            tty: r.tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
        });
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> Result<Response<cri::AttachResponse>, Status> {
        let r = req.into_inner();
        self.running_container(&r.container_id).await?;
        let url = self.streaming.url(Target::Attach {
            container: r.container_id,
            tty: r.tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
        });
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        let r = req.into_inner();
        let info = self.inspect(&r.pod_sandbox_id).await?;
        if !info.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            return Err(Status::failed_precondition("the pod sandbox is not running"));
        }
        let url = self.streaming.url(Target::PortForward { sandbox: info.id.unwrap_or(r.pod_sandbox_id) });
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = req.into_inner().container_id;
        let stats = self.stats_of(&id).await?;
        Ok(Response::new(cri::ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let mut selector = filter.label_selector.clone();
        if !filter.pod_sandbox_id.is_empty() {
            selector.insert(LABEL_SANDBOX.into(), filter.pod_sandbox_id.clone());
        }
        let running = self.list(KIND_CONTAINER, &selector).await?.into_iter().filter(|c| {
            summary_state(c.state.as_ref()) == cri::ContainerState::ContainerRunning
                && (filter.id.is_empty() || c.id.as_deref().is_some_and(|id| id.starts_with(&filter.id)))
        });
        let ids: Vec<String> = running.filter_map(|c| c.id).collect();
        let all = futures::future::join_all(ids.iter().map(|id| self.stats_of(id))).await;
        Ok(Response::new(cri::ListContainerStatsResponse { stats: all.into_iter().filter_map(Result::ok).collect() }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr =
            req.into_inner().runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).unwrap_or_default();
        if !cidr.is_empty() {
            self.ensure_network(&cidr).await?;
        }
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, _: Request<cri::StatusRequest>) -> Result<Response<cri::StatusResponse>, Status> {
        let runtime_ready = self.docker.ping().await;
        let network_ready = self.network.read().await.is_some();
        let conditions = vec![
            cri::RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: runtime_ready.is_ok(),
                reason: if runtime_ready.is_ok() { "" } else { "DockerDaemonNotReady" }.into(),
                message: runtime_ready.err().map(|e| e.to_string()).unwrap_or_default(),
            },
            cri::RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: network_ready,
                reason: if network_ready { "" } else { "NetworkPluginNotReady" }.into(),
                message: if network_ready { String::new() } else { "no pod CIDR configured yet".into() },
            },
        ];
        Ok(Response::new(cri::StatusResponse { status: Some(cri::RuntimeStatus { conditions }), info: HashMap::new() }))
    }
}

impl DockerRuntime {
    async fn running_container(&self, id: &str) -> Result<(), Status> {
        let info = self.inspect(id).await?;
        let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        if label(&labels, LABEL_INSTANCE) != self.cfg.instance {
            return Err(Status::not_found("no such container"));
        }
        if !info.state.and_then(|s| s.running).unwrap_or(false) {
            return Err(Status::failed_precondition(format!("container {id} is not running")));
        }
        Ok(())
    }

    async fn remove_one(&self, id: &str) -> Result<(), Status> {
        match self.docker.inspect_container(id, None).await {
            Ok(info) => {
                let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
                let link = label(&labels, LABEL_LOG_PATH);
                if !link.is_empty() {
                    let _ = std::fs::remove_file(link);
                }
            }
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(status_of(e)),
        }
        match self.docker.remove_container(id, Some(force())).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(status_of(e)),
        }
    }

    async fn stats_of(&self, id: &str) -> Result<cri::ContainerStats, Status> {
        let info = self.inspect(id).await?;
        let all = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        let mut stream = self.docker.stats(id, Some(StatsOptions { stream: false, one_shot: true }));
        let s =
            stream.next().await.ok_or_else(|| Status::unavailable("Docker returned no stats"))?.map_err(status_of)?;
        let ts = now_nanos();
        let cpu_total = s.cpu_stats.as_ref().and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage);
        let mem = s.memory_stats.clone().unwrap_or_default();
        let usage = mem.usage.unwrap_or(0);
        // cgroup v1: working set = usage - inactive file (what upstream reports).
        let inactive = mem
            .stats
            .as_ref()
            .and_then(|st| st.get("total_inactive_file").or_else(|| st.get("inactive_file")).copied())
            .unwrap_or(0);
        let rss = mem.stats.as_ref().and_then(|st| st.get("total_rss").or_else(|| st.get("anon")).copied());
        let (labels, annotations) = split_labels(&all);
        Ok(cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: info.id.clone().unwrap_or_default(),
                metadata: Some(container_metadata(&all)),
                labels,
                annotations,
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: cpu_total.map(|v| cri::UInt64Value { value: v }),
                usage_nano_cores: None,
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: ts,
                working_set_bytes: Some(cri::UInt64Value { value: usage.saturating_sub(inactive) }),
                usage_bytes: Some(cri::UInt64Value { value: usage }),
                rss_bytes: rss.map(|value| cri::UInt64Value { value }),
                ..Default::default()
            }),
            writable_layer: None,
        })
    }
}

/// Exec, attach and port targets for the streaming server, on Docker.
struct DockerStreams {
    docker: Docker,
    network: String,
}

fn output_of(
    s: std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogOutput, DockerError>> + Send>>,
) -> crate::streaming::Output {
    Box::pin(s.take_while(|r| futures::future::ready(r.is_ok())).filter_map(|r| async move {
        match r.ok()? {
            LogOutput::StdErr { message } => Some((2u8, message)),
            LogOutput::StdOut { message } | LogOutput::Console { message } => Some((1u8, message)),
            LogOutput::StdIn { .. } => None,
        }
    }))
}

#[async_trait::async_trait]
impl Backend for DockerStreams {
    async fn exec(&self, container: &str, cmd: &[String], tty: bool, stdin: bool) -> Result<Process, String> {
        let exec = self
            .docker
            .create_exec(
                container,
                CreateExecOptions::<String> {
                    cmd: Some(cmd.to_vec()),
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(tty),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let started = self
            .docker
            .start_exec(&exec.id, Some(bollard::exec::StartExecOptions { detach: false, tty, output_capacity: None }))
            .await
            .map_err(|e| e.to_string())?;
        match started {
            StartExecResults::Attached { output, input } => {
                Ok(Process { stdin: stdin.then_some(input), output: output_of(output), handle: exec.id })
            }
            StartExecResults::Detached => Err("the exec detached".into()),
        }
    }

    async fn attach(&self, container: &str, _tty: bool, stdin: bool) -> Result<Process, String> {
        let opts = bollard::query_parameters::AttachContainerOptions {
            stream: true,
            stdin,
            stdout: true,
            stderr: true,
            logs: false,
            detach_keys: None,
        };
        let r = self.docker.attach_container(container, Some(opts)).await.map_err(|e| e.to_string())?;
        Ok(Process {
            stdin: stdin.then_some(r.input),
            output: output_of(r.output),
            handle: format!("attach:{container}"),
        })
    }

    async fn resize(&self, handle: &str, width: u16, height: u16) {
        if width == 0 || height == 0 {
            return;
        }
        let _ = match handle.strip_prefix("attach:") {
            Some(c) => {
                let o = bollard::query_parameters::ResizeContainerTTYOptions { w: width as i32, h: height as i32 };
                self.docker.resize_container_tty(c, o).await
            }
            None => self.docker.resize_exec(handle, bollard::exec::ResizeExecOptions { width, height }).await,
        };
    }

    async fn exit_code(&self, handle: &str) -> Result<i32, String> {
        if let Some(c) = handle.strip_prefix("attach:") {
            let info = self.docker.inspect_container(c, None).await.map_err(|e| e.to_string())?;
            let st = info.state.unwrap_or_default();
            return Ok(if st.running == Some(true) { 0 } else { st.exit_code.unwrap_or(0) as i32 });
        }
        for _ in 0..50 {
            let i = self.docker.inspect_exec(handle).await.map_err(|e| e.to_string())?;
            if i.running != Some(true) {
                return Ok(i.exit_code.unwrap_or(0) as i32);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err("the command is still running".into())
    }

    async fn pod_address(&self, sandbox: &str) -> Result<std::net::IpAddr, String> {
        let info = self.docker.inspect_container(sandbox, None).await.map_err(|e| e.to_string())?;
        let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
        if label(&labels, LABEL_HOST_NETWORK) == "true" {
            return Ok(std::net::IpAddr::from([127, 0, 0, 1]));
        }
        info.network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(&self.network).and_then(|e| e.ip_address.clone()))
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| "the pod has no IP".to_string())
    }
}

#[tonic::async_trait]
impl ImageService for DockerRuntime {
    async fn list_images(
        &self,
        _: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let images = self.docker.list_images(Some(ListImagesOptions::default())).await.map_err(status_of)?;
        let images = images
            .into_iter()
            .map(|i| cri::Image {
                id: i.id,
                repo_tags: i.repo_tags,
                repo_digests: i.repo_digests,
                size: i.size.max(0) as u64,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let image = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        let found = match self.docker.inspect_image(&normalized(&image)).await {
            Ok(i) => Some(cri::Image {
                id: i.id.unwrap_or_default(),
                repo_tags: i.repo_tags.unwrap_or_default(),
                repo_digests: i.repo_digests.unwrap_or_default(),
                size: i.size.unwrap_or(0).max(0) as u64,
                username: i.config.and_then(|c| c.user).unwrap_or_default(),
                ..Default::default()
            }),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(status_of(e)),
        };
        Ok(Response::new(cri::ImageStatusResponse { image: found, info: HashMap::new() }))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = req.into_inner();
        let image = req.image.map(|i| i.image).unwrap_or_default();
        if image.is_empty() {
            return Err(Status::invalid_argument("image is required"));
        }
        let (repo, tag) = split_reference(&image);
        let credentials = req.auth.map(|a| DockerCredentials {
            username: (!a.username.is_empty()).then_some(a.username),
            password: (!a.password.is_empty()).then_some(a.password),
            auth: (!a.auth.is_empty()).then_some(a.auth),
            serveraddress: (!a.server_address.is_empty()).then_some(a.server_address),
            identitytoken: (!a.identity_token.is_empty()).then_some(a.identity_token),
            registrytoken: (!a.registry_token.is_empty()).then_some(a.registry_token),
            ..Default::default()
        });
        let opts = CreateImageOptions { from_image: Some(repo), tag: Some(tag), ..Default::default() };
        let mut progress = self.docker.create_image(Some(opts), None, credentials);
        while let Some(step) = progress.next().await {
            let step = step.map_err(|e| match e {
                DockerError::DockerResponseServerError { message, .. } => pull_error(message),
                other => pull_error(other.to_string()),
            })?;
            if let Some(err) = step.error_detail.and_then(|d| d.message) {
                return Err(pull_error(err));
            }
        }
        let id = self.docker.inspect_image(&normalized(&image)).await.map_err(status_of)?.id.unwrap_or_default();
        Ok(Response::new(cri::PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let image = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        match self.docker.remove_image(&normalized(&image), None::<RemoveImageOptions>, None).await {
            Ok(_) => Ok(Response::new(cri::RemoveImageResponse {})),
            Err(e) if is_not_found(&e) => Ok(Response::new(cri::RemoveImageResponse {})),
            Err(e) => Err(status_of(e)),
        }
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let info = self.docker.info().await.map_err(status_of)?;
        let root = info.docker_root_dir.unwrap_or_else(|| "/var/lib/docker".into());
        let fs = cri::FilesystemUsage {
            timestamp: now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier { mountpoint: root }),
            used_bytes: None,
            inodes_used: None,
        };
        Ok(Response::new(cri::ImageFsInfoResponse { image_filesystems: vec![fs], container_filesystems: vec![] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(split_reference("busybox:1.36"), ("busybox".into(), "1.36".into()));
        assert_eq!(split_reference("localhost:5000/app"), ("localhost:5000/app".into(), "latest".into()));
        assert_eq!(split_reference("localhost:5000/app:v2"), ("localhost:5000/app".into(), "v2".into()));
        assert_eq!(split_reference("app@sha256:abc"), ("app".into(), "sha256:abc".into()));
        assert_eq!(normalized("registry.k8s.io/pause:3.10"), "registry.k8s.io/pause:3.10");
    }

    #[test]
    fn host_ports_of_one_container_port_on_several_addresses_are_all_published() {
        let mapping = |protocol: cri::Protocol, container_port: i32, host_port: i32, host_ip: &str| cri::PortMapping {
            protocol: protocol as i32,
            container_port,
            host_port,
            host_ip: host_ip.into(),
        };
        let bindings = port_bindings(&[
            mapping(cri::Protocol::Tcp, 8080, 54321, "127.0.0.1"),
            mapping(cri::Protocol::Tcp, 8080, 54321, "192.0.2.2"),
            mapping(cri::Protocol::Udp, 8081, 54321, ""),
            mapping(cri::Protocol::Tcp, 9090, 0, ""),
        ]);
        let shown = |key: &str| -> Vec<(Option<String>, Option<String>)> {
            bindings[key].iter().flatten().map(|b| (b.host_ip.clone(), b.host_port.clone())).collect()
        };
        let port = Some("54321".to_string());
        assert_eq!(
            shown("8080/tcp"),
            [(Some("127.0.0.1".into()), port.clone()), (Some("192.0.2.2".into()), port.clone())]
        );
        assert_eq!(shown("8081/udp"), [(None, port)], "no hostIP publishes on every address");
        assert_eq!(bindings.len(), 2, "a container port without a hostPort is not published");
    }

    #[test]
    fn a_sandbox_exposes_every_port_it_publishes() {
        let mapping = |protocol: cri::Protocol, container_port: i32| cri::PortMapping {
            protocol: protocol as i32,
            container_port,
            host_port: 54321,
            host_ip: String::new(),
        };
        let bindings = port_bindings(&[mapping(cri::Protocol::Udp, 8081), mapping(cri::Protocol::Tcp, 8080)]);
        let host_config = HostConfig { port_bindings: Some(bindings), ..Default::default() };
        let body = sandbox_body("pause", Some("web"), HashMap::new(), host_config, None);
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_string(), "8081/udp".to_string()]));
        assert_eq!(body.hostname.as_deref(), Some("web"));
        let unpublished = sandbox_body("pause", None, HashMap::new(), HostConfig::default(), None);
        assert_eq!(unpublished.exposed_ports, None);
    }

    #[test]
    fn pull_errors_are_classified() {
        let code = |m: &str| pull_error(m.to_string()).code();
        assert_eq!(
            code("Head \"https://127.0.0.1:5000/v2/x/manifests/1\": no basic auth credentials"),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            code("pull access denied for x, repository does not exist or may require 'docker login'"),
            tonic::Code::PermissionDenied
        );
        assert_eq!(code("manifest for x:1 not found: manifest unknown"), tonic::Code::NotFound);
        assert_eq!(
            code("Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host"),
            tonic::Code::Unavailable
        );
    }

    #[test]
    fn pod_network_hands_out_hosts_after_the_gateway() {
        let (base, prefix) = parse_cidr("10.244.3.7/24").expect("cidr");
        let net = PodNetwork { name: "n".into(), base, prefix };
        assert_eq!(net.cidr(), "10.244.3.0/24");
        assert_eq!(net.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        let hosts: Vec<_> = net.hosts().collect();
        assert_eq!(hosts.first(), Some(&Ipv4Addr::new(10, 244, 3, 2)));
        assert_eq!(hosts.last(), Some(&Ipv4Addr::new(10, 244, 3, 254)));
        assert_eq!(hosts.len(), 253);
        assert!(parse_cidr("10.244.0.0/31").is_none());
        assert!(parse_cidr("banana").is_none());
    }
}
