//! Command-line flags (upstream names, each also settable from the environment) and their
//! validation into a [`Config`]. A bad flag is reported as one line before any port is bound.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::bootstrap::Cidr;
use crate::certs::TlsSource;
use crate::storage::etcd::EtcdOptions;

#[derive(Debug, Clone, Parser)]
#[command(name = "apiserver", about = "The Kubernetes API server, backed by etcd", version)]
pub struct Options {
    /// etcd endpoints, comma separated.
    #[arg(long, env = "APISERVER_ETCD_SERVERS", value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd_servers: Vec<String>,

    /// `etcd3` (durable) or `memory` (nothing survives a restart; for tests and simulations).
    #[arg(long, env = "APISERVER_STORAGE_BACKEND", default_value = "etcd3")]
    pub storage_backend: String,

    /// Port for HTTPS. 0 picks a free port (printed at start).
    #[arg(long, env = "APISERVER_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,

    /// Address to listen on; 0.0.0.0 for every interface.
    #[arg(long, env = "APISERVER_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Address other cluster members use to reach this apiserver (the `kubernetes` Endpoints).
    /// Defaults to the bind address, or the host's primary address when binding to all.
    #[arg(long, env = "APISERVER_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<IpAddr>,

    /// Directory for the generated CA, serving certificate and admin token.
    #[arg(long, env = "APISERVER_CERT_DIR", default_value = "/var/run/kubernetes")]
    pub cert_dir: PathBuf,

    /// Serving certificate (PEM). With --tls-private-key-file, replaces the generated one.
    #[arg(long, env = "APISERVER_TLS_CERT_FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    #[arg(long, env = "APISERVER_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,

    /// Client certificate (PEM) for connections to kubelets (logs, exec, port-forward). Without
    /// it, one signed by the generated CA is made in --cert-dir.
    #[arg(long, env = "APISERVER_KUBELET_CLIENT_CERTIFICATE", requires = "kubelet_client_key")]
    pub kubelet_client_certificate: Option<PathBuf>,

    #[arg(long, env = "APISERVER_KUBELET_CLIENT_KEY", requires = "kubelet_client_certificate")]
    pub kubelet_client_key: Option<PathBuf>,

    /// Extra names or IPs for the generated serving certificate (repeatable).
    #[arg(long = "tls-san", env = "APISERVER_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,

    /// Static bearer tokens: `token,user,uid[,"group1,group2"]` per line. Without it a token file
    /// with one admin token is generated in --cert-dir.
    #[arg(long, env = "APISERVER_TOKEN_AUTH_FILE")]
    pub token_auth_file: Option<PathBuf>,

    /// Private key (PKCS#8 PEM, ECDSA P-256) that signs service account tokens. Without it,
    /// `sa.key` in --cert-dir is used, generated on first start.
    #[arg(long, env = "APISERVER_SERVICE_ACCOUNT_SIGNING_KEY_FILE")]
    pub service_account_signing_key_file: Option<PathBuf>,

    /// The `iss` of service account tokens, and the issuer OIDC discovery names.
    #[arg(long, env = "APISERVER_SERVICE_ACCOUNT_ISSUER", default_value = crate::satoken::DEFAULT_ISSUER)]
    pub service_account_issuer: String,

    /// Audiences a token must name one of to authenticate (default: the issuer), comma separated.
    #[arg(long, env = "APISERVER_API_AUDIENCES", value_delimiter = ',')]
    pub api_audiences: Vec<String>,

    /// Write a kubeconfig for a system:masters user here (mode 0600).
    #[arg(long, env = "APISERVER_ADMIN_KUBECONFIG")]
    pub admin_kubeconfig: Option<PathBuf>,

    /// ClusterIP range for Services; its first address is the `kubernetes` Service.
    #[arg(long, env = "APISERVER_SERVICE_CLUSTER_IP_RANGE", default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,

    /// NodePorts are allocated from this inclusive range.
    #[arg(long, env = "APISERVER_SERVICE_NODE_PORT_RANGE", default_value = "30000-32767")]
    pub service_node_port_range: String,

    /// Watches without timeoutSeconds end after this many seconds times a random factor in
    /// [1, 2), spreading reconnects.
    #[arg(long, env = "APISERVER_MIN_REQUEST_TIMEOUT", default_value_t = 1800)]
    pub min_request_timeout: u64,

    /// Threads serving requests. 0 means half the CPUs (at least one): the apiserver shares its
    /// machine with etcd, which needs CPU in the same moments; on 2 cores one thread measured
    /// 10-15% more creates/s than two (README, Benchmark).
    #[arg(long, env = "APISERVER_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,

    /// Objects per etcd read when streaming a LIST without a limit (not an upstream flag).
    #[arg(long, env = "APISERVER_LIST_CHUNK_SIZE", default_value_t = 2500, hide = true)]
    pub list_chunk_size: usize,

    /// Log verbosity: 0 info, 1-3 debug, 4+ trace. RUST_LOG overrides.
    #[arg(short = 'v', long = "v", env = "APISERVER_V", default_value_t = 0)]
    pub verbosity: u8,
}

#[derive(Debug, Clone)]
pub enum StorageConfig {
    Etcd(EtcdOptions),
    Memory,
}

pub struct Config {
    pub storage: StorageConfig,
    pub bind_address: IpAddr,
    pub secure_port: u16,
    pub advertise_address: IpAddr,
    pub tls: TlsSource,
    pub cert_dir: PathBuf,
    pub token_auth_file: Option<PathBuf>,
    /// The service account signing key, and whether to generate it when missing.
    pub service_account_key: (PathBuf, bool),
    pub service_account_issuer: String,
    pub api_audiences: Vec<String>,
    pub admin_kubeconfig: Option<PathBuf>,
    pub service_range: Cidr,
    pub node_port_range: (u16, u16),
    pub min_request_timeout: Duration,
    pub bookmark_interval: Duration,
    /// Objects per storage read when streaming a LIST without a limit.
    pub list_chunk: usize,
    /// Where the kubelet client certificate comes from.
    pub kubelet_client: KubeletClientCert,
}

/// The certificate the apiserver shows kubelets.
#[derive(Clone, Debug)]
pub enum KubeletClientCert {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Generated in the certificate directory, signed by the generated CA.
    Generated,
    /// Serving certificates came from files and no kubelet client certificate was given.
    None,
}

/// The address the host would use to reach the outside, found by a route lookup (a UDP
/// `connect` sends nothing).
fn primary_address() -> Option<IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    sock.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}

impl Options {
    /// The number of runtime worker threads `--worker-threads` asks for.
    pub fn runtime_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cpus / 2).max(1)
    }

    pub fn into_config(self) -> Result<Config, String> {
        let storage = match self.storage_backend.as_str() {
            "etcd3" | "etcd" => {
                if self.etcd_servers.iter().all(|s| s.trim().is_empty()) {
                    return Err("--etcd-servers must name at least one endpoint".into());
                }
                StorageConfig::Etcd(EtcdOptions::new(self.etcd_servers.iter().map(|s| s.trim().to_string()).collect()))
            }
            "memory" => StorageConfig::Memory,
            other => {
                return Err(format!("--storage-backend: unknown backend {other:?} (etcd3 or memory)"));
            }
        };
        let service_range: Cidr =
            self.service_cluster_ip_range.parse().map_err(|e| format!("--service-cluster-ip-range: {e}"))?;
        let node_port_range = self
            .service_node_port_range
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .filter(|(a, b)| a <= b)
            .ok_or_else(|| {
                format!("--service-node-port-range: {:?} is not a range like 30000-32767", self.service_node_port_range)
            })?;
        let advertise_address = match self.advertise_address {
            Some(a) => a,
            None if !self.bind_address.is_unspecified() => self.bind_address,
            None => primary_address().unwrap_or(IpAddr::from([127, 0, 0, 1])),
        };
        let kubelet_client = match (self.kubelet_client_certificate, self.kubelet_client_key, &self.tls_cert_file) {
            (Some(cert), Some(key), _) => KubeletClientCert::Files { cert, key },
            (_, _, Some(_)) => KubeletClientCert::None,
            _ => KubeletClientCert::Generated,
        };
        let tls = match (self.tls_cert_file, self.tls_private_key_file) {
            (Some(cert), Some(key)) => TlsSource::Files { cert, key },
            _ => {
                let mut sans: Vec<String> = vec![
                    "localhost".into(),
                    "127.0.0.1".into(),
                    "kubernetes".into(),
                    "kubernetes.default".into(),
                    "kubernetes.default.svc".into(),
                    "kubernetes.default.svc.cluster.local".into(),
                    service_range.first_host().to_string(),
                    advertise_address.to_string(),
                ];
                if !self.bind_address.is_unspecified() {
                    sans.push(self.bind_address.to_string());
                }
                if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
                    let host = host.trim();
                    if !host.is_empty() {
                        sans.push(host.to_string());
                    }
                }
                sans.extend(self.tls_sans.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()));
                let mut seen = std::collections::BTreeSet::new();
                sans.retain(|s| seen.insert(s.clone()));
                TlsSource::Generated { cert_dir: self.cert_dir.clone(), sans }
            }
        };
        if let Some(f) = &self.token_auth_file
            && !f.exists()
        {
            return Err(format!("--token-auth-file: {} does not exist", f.display()));
        }
        if let Some(f) = &self.service_account_signing_key_file
            && !f.exists()
        {
            return Err(format!("--service-account-signing-key-file: {} does not exist", f.display()));
        }
        if self.service_account_issuer.trim().is_empty() {
            return Err("--service-account-issuer must not be empty".into());
        }
        let service_account_key = match self.service_account_signing_key_file {
            Some(f) => (f, false),
            None => (self.cert_dir.join("sa.key"), true),
        };
        Ok(Config {
            service_account_key,
            service_account_issuer: self.service_account_issuer.trim().to_string(),
            api_audiences: self.api_audiences.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
            storage,
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            advertise_address,
            tls,
            cert_dir: self.cert_dir,
            token_auth_file: self.token_auth_file,
            admin_kubeconfig: self.admin_kubeconfig,
            service_range,
            node_port_range,
            min_request_timeout: Duration::from_secs(self.min_request_timeout.max(1)),
            bookmark_interval: Duration::from_secs(60),
            list_chunk: self.list_chunk_size.max(1),
            kubelet_client,
        })
    }
}
