//! The Kubernetes API server over etcd.
//!
//! `main.rs` parses flags into a [`Config`] and calls [`run`]; tests call [`start`] with port 0
//! and talk to the returned address. See `ARCHITECTURE.md` for how the modules fit together.

pub mod auth;
pub mod bootstrap;
pub mod certs;
pub mod codec;
pub mod discovery;
pub mod error;
pub mod events_v1;
pub mod fuzzing;
pub mod handler;
pub mod http;
pub mod kinds;
pub mod meta;
pub mod metrics;
pub mod metrics_api;
pub mod openapi;
pub mod openapi_v2;
pub mod options;
pub mod patch;
pub mod podproxy;
pub mod protobuf;
pub mod proxy;
pub mod resources;
pub mod rest;
pub mod reviews;
pub mod satoken;
pub mod selectors;
pub mod server;
pub mod storage;
pub mod table;
pub mod validation;
pub mod version;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use options::{Config, Options, StorageConfig};

use crate::auth::{Authenticator, TokenAuthenticator};
use crate::handler::State;
use crate::storage::Storage;

/// A started apiserver.
pub struct Running {
    pub addr: SocketAddr,
    /// The CA clients should trust, PEM.
    pub ca_pem: String,
    /// A system:masters token, if the token file has one.
    pub admin_token: Option<String>,
    pub state: Arc<State>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        local_url(self.addr)
    }
}

/// `https://127.0.0.1:<port>` for a wildcard bind, else the bound address.
fn local_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { addr.ip() };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

/// Binds, starts serving and bootstrapping in the background, and returns.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let storage: Arc<dyn Storage> = match &config.storage {
        StorageConfig::Etcd(opts) => Arc::new(
            storage::etcd::EtcdStorage::connect(opts.clone())
                .await
                .with_context(|| format!("connecting to etcd at {}", opts.endpoints.join(",")))?,
        ),
        StorageConfig::Memory => Arc::new(storage::memory::MemoryStorage::new()),
    };
    start_with_storage(config, storage, shutdown).await
}

/// [`start`] with a storage the caller made (component tests share one in-memory store).
pub async fn start_with_storage(
    config: Config,
    storage: Arc<dyn Storage>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let material = certs::load_or_generate(&config.tls).context("preparing TLS certificates")?;
    let tls = certs::server_config(&material)?;
    let token_file: PathBuf = match &config.token_auth_file {
        Some(f) => f.clone(),
        None => {
            let f = config.cert_dir.join("tokens.csv");
            certs::ensure_token_file(&f).context("writing the admin token file")?;
            f
        }
    };
    let tokens = TokenAuthenticator::load(&token_file)?;
    let admin_token = tokens.admin_token().map(str::to_string);
    let (key_path, generate) = &config.service_account_key;
    if *generate {
        std::fs::create_dir_all(&config.cert_dir).with_context(|| format!("creating {}", config.cert_dir.display()))?;
    }
    let signer =
        satoken::Signer::load(key_path, *generate, config.service_account_issuer.clone(), config.api_audiences.clone())
            .context("loading the service account signing key")?;
    let auth = Authenticator { tokens, service_accounts: Some(Arc::new(signer)) };

    let kubelet_tls = match &config.kubelet_client {
        options::KubeletClientCert::Files { cert, key } => Some(podproxy::kubelet_tls(cert, key)?),
        options::KubeletClientCert::Generated => {
            let (cert, key) =
                certs::ensure_kubelet_client_cert(&config.cert_dir).context("making the kubelet client certificate")?;
            Some(podproxy::kubelet_tls(&cert, &key)?)
        }
        options::KubeletClientCert::None => None,
    };
    let listener = TcpListener::bind((config.bind_address, config.secure_port))
        .await
        .with_context(|| format!("binding {}:{}", config.bind_address, config.secure_port))?;
    let addr = listener.local_addr()?;

    let registry = Arc::new(resources::Registry::builtin());
    let mut store = rest::Store::new(storage, registry.clone());
    store.bookmark_interval = config.bookmark_interval;
    store.ranges = rest::allocator::Ranges { service_ips: config.service_range, node_ports: config.node_port_range };
    let state = Arc::new(State {
        store: Arc::new(store),
        openapi: openapi::OpenApiV3::build(&registry),
        openapi_v2: {
            let doc = openapi_v2::document(&registry);
            (bytes::Bytes::from(doc.to_string()), bytes::Bytes::from(openapi_v2::protobuf(&doc)))
        },
        registry,
        auth,
        metrics: metrics::Metrics::new(),
        server_address: format!("{}:{}", config.advertise_address, addr.port()),
        bootstrapped: AtomicBool::new(false),
        min_request_timeout: config.min_request_timeout,
        list_chunk: config.list_chunk,
        kubelet_tls,
        shutdown: shutdown.clone(),
    });
    let running_url = local_url(addr);
    if let Some(path) = &config.admin_kubeconfig {
        let token =
            admin_token.as_deref().context("the token file has no system:masters user for the admin kubeconfig")?;
        certs::write_kubeconfig(path, "kubernetes", &running_url, &material.ca_pem, token)?;
        info!(path = %path.display(), "Wrote admin kubeconfig");
    }
    let boot = bootstrap::Bootstrap {
        service_range: config.service_range,
        advertise_address: config.advertise_address,
        secure_port: addr.port(),
    };
    tokio::spawn(boot.run(state.clone(), shutdown.clone()));
    {
        let store = state.store.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { store.run_caches(shutdown).await });
    }
    tokio::spawn(repair_allocations_periodically(state.store.clone(), shutdown.clone()));
    let task = tokio::spawn(server::serve(listener, tls, state.clone(), shutdown));
    info!(%addr, "Serving the Kubernetes API");
    Ok(Running { addr, ca_pem: material.ca_pem, admin_token, state, task })
}

/// Reconciles Service IP and port allocations with the Services, at start and every 5 minutes.
async fn repair_allocations_periodically(store: Arc<rest::Store>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = store.repair_allocations().await {
                    tracing::debug!(error = %e, "Allocation repair failed, will retry");
                }
            }
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running.task.await.context("server task")?;
    Ok(())
}
