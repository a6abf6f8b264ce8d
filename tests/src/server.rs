//! The apiserver under test: in-process (fast, for API tests) or as the real binary (for
//! kubectl end-to-end tests and outage tests), each with its own certificate directory and admin
//! kubeconfig.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use apiserver::certs::TlsSource;
use apiserver::storage::etcd::EtcdOptions;
use apiserver::{Config, StorageConfig};
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::{TempDir, eventually, free_port};

/// What a test needs to talk to a running apiserver.
pub struct Endpoint {
    pub url: String,
    pub ca_pem: String,
    pub token: String,
    pub kubeconfig: PathBuf,
}

impl Endpoint {
    pub fn client(&self) -> Client {
        Client::new(&self.url, &self.ca_pem, Some(self.token.clone()))
    }

    /// A `kube` client configured like kubectl would be from the admin kubeconfig.
    pub async fn kube_client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("kube config");
        kube::Client::try_from(config).expect("kube client")
    }

    pub async fn wait_ready(&self) {
        let client = self.client();
        eventually(Duration::from_secs(30), "apiserver /readyz", || {
            let client = client.clone();
            async move { (client.get("/readyz").await.status == 200).then_some(()) }
        })
        .await;
    }
}

/// The apiserver running inside the test process.
pub struct InProcess {
    pub endpoint: Endpoint,
    pub shutdown: CancellationToken,
    pub running: apiserver::Running,
    _dir: TempDir,
}

impl InProcess {
    pub async fn start(etcd_endpoint: &str) -> InProcess {
        Self::start_with(etcd_endpoint, |_| {}).await
    }

    pub async fn start_with(etcd_endpoint: &str, tweak: impl FnOnce(&mut Config)) -> InProcess {
        Self::start_on(etcd_endpoint, None, tweak).await
    }

    /// With a storage the test made (a fault-injecting wrapper, say) instead of one from the config.
    pub async fn start_on(
        etcd_endpoint: &str,
        storage: Option<std::sync::Arc<dyn apiserver::storage::Storage>>,
        tweak: impl FnOnce(&mut Config),
    ) -> InProcess {
        let dir = TempDir::new("apiserver").expect("dir");
        let cert_dir = dir.path().join("pki");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let mut etcd = EtcdOptions::new(vec![etcd_endpoint.to_string()]);
        etcd.request_timeout = Duration::from_secs(3);
        etcd.watch_resume_window = Duration::from_secs(5);
        let mut config = Config {
            storage: StorageConfig::Etcd(etcd),
            bind_address: "127.0.0.1".parse().expect("ip"),
            secure_port: 0,
            advertise_address: "127.0.0.1".parse().expect("ip"),
            tls: TlsSource::Generated {
                cert_dir: cert_dir.clone(),
                sans: vec!["localhost".into(), "127.0.0.1".into()],
            },
            service_account_key: (cert_dir.join("sa.key"), true),
            service_account_issuer: apiserver::satoken::DEFAULT_ISSUER.into(),
            api_audiences: Vec::new(),
            cert_dir,
            token_auth_file: None,
            admin_kubeconfig: Some(kubeconfig.clone()),
            service_range: "10.96.0.0/12".parse().expect("cidr"),
            node_port_range: (30000, 32767),
            min_request_timeout: Duration::from_secs(1800),
            bookmark_interval: Duration::from_secs(1),
            list_chunk: 1000,
            kubelet_client: apiserver::options::KubeletClientCert::Generated,
        };
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let running = match storage {
            Some(s) => apiserver::start_with_storage(config, s, shutdown.clone()).await,
            None => apiserver::start(config, shutdown.clone()).await,
        }
        .expect("apiserver starts");
        let endpoint = Endpoint {
            url: running.url(),
            ca_pem: running.ca_pem.clone(),
            token: running.admin_token.clone().expect("admin token"),
            kubeconfig,
        };
        endpoint.wait_ready().await;
        InProcess { endpoint, shutdown, running, _dir: dir }
    }

    pub fn client(&self) -> Client {
        self.endpoint.client()
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The real `apiserver` binary.
pub struct Process {
    pub endpoint: Endpoint,
    child: Child,
    pub dir: TempDir,
}

impl Process {
    pub async fn start(etcd_endpoint: &str, extra: &[&str]) -> Process {
        let dir = TempDir::new("apiserver-bin").expect("dir");
        let port = free_port();
        let cert_dir = dir.path().join("pki");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let log = std::fs::File::create(dir.path().join("apiserver.log")).expect("log file");
        let child = crate::child_command(crate::binary("apiserver"))
            .args(["--etcd-servers", etcd_endpoint, "--secure-port", &port.to_string(), "--bind-address", "127.0.0.1"])
            .arg("--cert-dir")
            .arg(&cert_dir)
            .arg("--admin-kubeconfig")
            .arg(&kubeconfig)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("apiserver binary starts");
        let kc = kubeconfig.clone();
        eventually(Duration::from_secs(30), "the admin kubeconfig", || {
            let kc = kc.clone();
            async move { kc.exists().then_some(()) }
        })
        .await;
        let ca_pem = std::fs::read_to_string(cert_dir.join("ca.crt")).expect("ca.crt");
        let tokens = std::fs::read_to_string(cert_dir.join("tokens.csv")).expect("tokens.csv");
        let token = tokens.split(',').next().expect("token").to_string();
        let endpoint = Endpoint { url: format!("https://127.0.0.1:{port}"), ca_pem, token, kubeconfig };
        endpoint.wait_ready().await;
        Process { endpoint, child, dir }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default()
    }

    /// PID, for reading its memory use.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A control-plane binary that only needs a kubeconfig (`scheduler`, `controller-manager`),
/// logging to a file; killed when dropped.
pub struct Component {
    child: Child,
    pub log: PathBuf,
}

impl Component {
    pub fn start(binary: &str, kubeconfig: &std::path::Path, log: &std::path::Path, extra: &[&str]) -> Component {
        let child = crate::child_command(crate::binary(binary))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} starts: {e}"));
        Component { child, log: log.to_path_buf() }
    }

    /// SIGKILL (a crash), waiting until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
    }
}
