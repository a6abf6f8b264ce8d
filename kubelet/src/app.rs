//! Flags (upstream names, each also from the environment) and `run`: connect to the runtime,
//! register the Node, keep its Lease and status, and run the pods bound to it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::cri::Cri;
use crate::events::Recorder;
use crate::node::{self, NodeConfig};
use crate::pod::ApiPods;
use crate::pod::manager::{PodManager, watch_pods};
use crate::pod::source::ApiSource;
use crate::pod::spec::SpecContext;
use crate::pod::worker::NodeContext;
use crate::runtime::docker::{DockerConfig, DockerRuntime};
use proto::cri;

#[derive(Parser, Debug, Clone)]
#[command(name = "kubelet", version, about = "Runs the pods bound to this node on Docker through CRI")]
pub struct Flags {
    /// Kubeconfig for talking to the apiserver.
    #[arg(long, env = "KUBELET_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The node's name (default: the machine's hostname).
    #[arg(long, env = "KUBELET_HOSTNAME_OVERRIDE")]
    pub hostname_override: Option<String>,
    /// The node's InternalIP (default: the address of the default route).
    #[arg(long, env = "KUBELET_NODE_IP")]
    pub node_ip: Option<String>,
    #[arg(long, env = "KUBELET_MAX_PODS", default_value_t = 110)]
    pub max_pods: i64,
    /// Where pod volumes and kubelet state live.
    #[arg(long, env = "KUBELET_ROOT_DIR", default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,
    /// Where container logs are linked (`<ns>_<pod>_<uid>/<container>/<n>.log`).
    #[arg(long, env = "KUBELET_POD_LOGS_DIR", default_value = "/var/log/pods")]
    pub pod_logs_dir: PathBuf,
    /// Labels for the Node at registration (`k=v,...`).
    #[arg(long, env = "KUBELET_NODE_LABELS", default_value = "")]
    pub node_labels: String,
    /// Taints for the Node at registration (`key=value:Effect,...`).
    #[arg(long, env = "KUBELET_REGISTER_WITH_TAINTS", default_value = "")]
    pub register_with_taints: String,
    /// The pod network when no IPAM controller assigns `node.spec.podCIDR`.
    #[arg(long, env = "KUBELET_POD_CIDR")]
    pub pod_cidr: Option<String>,
    /// Cluster DNS server(s) for pods with dnsPolicy ClusterFirst.
    #[arg(long, env = "KUBELET_CLUSTER_DNS", value_delimiter = ',', default_value = "10.96.0.10")]
    pub cluster_dns: Vec<String>,
    #[arg(long, env = "KUBELET_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The resolv.conf pods with dnsPolicy Default get.
    #[arg(long, env = "KUBELET_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// A CRI runtime on a unix socket (`unix:///path`); default: Docker, in-process.
    #[arg(long, env = "KUBELET_CONTAINER_RUNTIME_ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,
    /// Serve the Docker runtime as CRI on this unix socket instead of running a node.
    #[arg(long, env = "KUBELET_SERVE_CRI")]
    pub serve_cri: Option<String>,
    /// dockerd's address (default: DOCKER_HOST or the local socket).
    #[arg(long, env = "DOCKER_HOST", default_value = "")]
    pub docker_endpoint: String,
    /// The image of every pod's sandbox (pause) container.
    #[arg(long, env = "KUBELET_POD_INFRA_CONTAINER_IMAGE", default_value = "registry.k8s.io/pause:3.10")]
    pub pod_infra_container_image: String,
    /// The kubelet's HTTPS port (announced in the Node status).
    #[arg(long, env = "KUBELET_PORT", default_value_t = 10250)]
    pub port: u16,
    /// The address the kubelet's HTTPS API listens on.
    #[arg(long, env = "KUBELET_ADDRESS", default_value = "0.0.0.0")]
    pub address: String,
    /// CA whose client certificates may use the kubelet's API (default: the kubeconfig's CA).
    #[arg(long, env = "KUBELET_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Seconds between syncs of a pod with nothing happening.
    #[arg(long, env = "KUBELET_SYNC_FREQUENCY", default_value_t = 10)]
    pub sync_frequency: u64,
}

impl Flags {
    pub fn node_name(&self) -> String {
        self.hostname_override.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_lowercase())
                .unwrap_or_else(|_| "localhost".into())
        })
    }
}

async fn docker(flags: &Flags, instance: &str) -> anyhow::Result<Arc<DockerRuntime>> {
    let cfg = DockerConfig {
        instance: instance.to_string(),
        root_dir: flags.root_dir.join("runtime"),
        pause_image: flags.pod_infra_container_image.clone(),
        docker_host: flags.docker_endpoint.clone(),
    };
    Ok(Arc::new(DockerRuntime::connect(cfg).await?))
}

/// `--serve-cri`: the Docker runtime on a unix socket, until `shutdown`.
pub async fn serve_cri(flags: Flags, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let endpoint = flags.serve_cri.clone().unwrap_or_default();
    let path = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(&endpoint));
    let runtime = docker(&flags, &flags.node_name()).await?;
    tracing::info!(socket = %path.display(), "serving CRI");
    crate::cri::serve(runtime, &path, shutdown).await
}

pub async fn run(flags: Flags, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let name = flags.node_name();
    let Some(kubeconfig) = flags.kubeconfig.clone() else {
        anyhow::bail!("--kubeconfig is required (standalone mode without an apiserver is not supported)");
    };
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
        .map_err(|e| anyhow::anyhow!("--kubeconfig {}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| anyhow::anyhow!("--kubeconfig: {e}"))?;
    let kube_ca = config.root_cert.clone().unwrap_or_default();
    let client = kube::Client::try_from(config)?;

    let cri = match &flags.container_runtime_endpoint {
        Some(e) if !e.is_empty() => Cri::connect(e).await?,
        _ => Cri::new(docker(&flags, &name).await?),
    };
    let version = cri
        .version(cri::VersionRequest::default())
        .await
        .map_err(|e| anyhow::anyhow!("container runtime: {}", e.message()))?;
    tracing::info!(node = %name, runtime = %format!("{} {}", version.runtime_name, version.runtime_version), "starting");

    std::fs::create_dir_all(&flags.root_dir)
        .map_err(|e| anyhow::anyhow!("--root-dir {}: {e}", flags.root_dir.display()))?;
    std::fs::create_dir_all(&flags.pod_logs_dir)
        .map_err(|e| anyhow::anyhow!("--pod-logs-dir {}: {e}", flags.pod_logs_dir.display()))?;
    let node_cfg = NodeConfig {
        name: name.clone(),
        node_ip: flags.node_ip.clone().filter(|i| !i.is_empty()).unwrap_or_else(node::detect_node_ip),
        max_pods: flags.max_pods,
        labels: node::parse_labels(&flags.node_labels).map_err(|e| anyhow::anyhow!("--node-labels: {e}"))?,
        taints: node::parse_taints(&flags.register_with_taints)
            .map_err(|e| anyhow::anyhow!("--register-with-taints: {e}"))?,
        pod_cidr: flags.pod_cidr.clone().filter(|c| !c.is_empty()),
        port: flags.port as i32,
        root_dir: flags.root_dir.clone(),
    };
    let client_ca_pem = match &flags.client_ca_file {
        Some(f) => std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("--client-ca-file {}: {e}", f.display()))?,
        None => kube_ca.iter().map(|der| pem("CERTIFICATE", der)).collect(),
    };
    if client_ca_pem.is_empty() {
        anyhow::bail!("--client-ca-file is required: the kubeconfig names no certificate authority");
    }
    let server_cfg = crate::server::ServerConfig {
        address: flags.address.clone(),
        port: flags.port,
        node_name: name.clone(),
        node_ip: node_cfg.node_ip.clone(),
        pki_dir: flags.root_dir.join("pki"),
        client_ca_pem,
    };
    let (listener, tls) = crate::server::bind(&server_cfg).await?;
    let stats = Arc::new(crate::stats::Stats::new(cri.clone(), &name));
    tokio::spawn(crate::server::serve(listener, tls, cri.clone(), stats));
    if let Some(c) = &node_cfg.pod_cidr
        && crate::runtime::docker::parse_cidr(c).is_none()
    {
        anyhow::bail!("--pod-cidr {c:?} is not an IPv4 CIDR between /8 and /30");
    }
    loop {
        match node::register(&client, &node_cfg).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not register the node; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    tracing::info!(node = %name, ip = %node_cfg.node_ip, "registered");
    tokio::spawn(node::lease_loop(client.clone(), name.clone()));
    tokio::spawn(node::status_loop(client.clone(), node_cfg.clone(), cri.clone()));
    {
        let (client, cri, name, flag) = (client.clone(), cri.clone(), name.clone(), node_cfg.pod_cidr.clone());
        tokio::spawn(async move {
            let cidr = node::wait_pod_cidr(&client, &name, flag.as_deref()).await;
            let req = cri::UpdateRuntimeConfigRequest {
                runtime_config: Some(cri::RuntimeConfig {
                    network_config: Some(cri::NetworkConfig { pod_cidr: cidr.clone() }),
                }),
            };
            loop {
                match cri.update_runtime_config(req.clone()).await {
                    Ok(_) => break tracing::info!(%cidr, "pod network ready"),
                    Err(e) => {
                        tracing::warn!(error = %e.message(), %cidr, "could not set up the pod network; retrying");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            }
        });
    }

    let m = node::machine(&flags.root_dir);
    let ctx = Arc::new(NodeContext {
        host_ip: node_cfg.node_ip.clone(),
        cri,
        source: Arc::new(ApiSource { client: client.clone() }),
        api: Arc::new(ApiPods { client: client.clone() }),
        events: Recorder::new(Some(client.clone()), &name),
        spec: SpecContext {
            cluster_dns: flags.cluster_dns.iter().filter(|s| !s.is_empty()).cloned().collect(),
            cluster_domain: flags.cluster_domain.clone(),
            pod_logs_dir: flags.pod_logs_dir.clone(),
            root_dir: flags.root_dir.clone(),
            host_resolv: flags.resolv_conf.clone(),
            node_memory_bytes: m.memory_bytes as i128,
        },
        allocatable: node::allocatable(&m),
        resync: Duration::from_secs(flags.sync_frequency.max(1)),
        images: Default::default(),
    });
    PodManager::new(ctx).run(watch_pods(client, &name), shutdown).await;
    tracing::info!("kubelet stopped; containers keep running");
    Ok(())
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
