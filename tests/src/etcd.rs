//! A real etcd (Debian's `etcd-server`, 3.4) on free loopback ports with its own data directory.
//! It can be stopped and started again on the same ports and data, for outage tests.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::{TempDir, free_port};

pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: TempDir,
}

impl Etcd {
    pub async fn start() -> Etcd {
        Self::start_in(None).await
    }

    /// With the data directory under `base` (a disk path for benchmarks; tmpfs by default).
    pub async fn start_in(base: Option<std::path::PathBuf>) -> Etcd {
        let dir = TempDir::new_in("etcd", base).expect("etcd data dir");
        let mut e = Etcd { child: None, client_port: free_port(), peer_port: free_port(), dir };
        e.spawn().await;
        e
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    async fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = crate::child_command("etcd")
            .args([
                "--name",
                "test",
                "--data-dir",
                &self.dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("test={peer}"),
                "--logger",
                "zap",
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (apt-get install etcd-server)");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = async {
                let mut c = etcd_client::Client::connect([self.endpoint()], None).await.ok()?;
                tokio::time::timeout(Duration::from_secs(1), c.get("probe", None)).await.ok()?.ok()
            }
            .await;
            if ok.is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become ready on {}", self.endpoint());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// PID of the running etcd, for reading its CPU and memory use.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills etcd (data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None).await.expect("etcd client")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
