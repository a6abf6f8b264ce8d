//! The real `kubelet` binary on the host's dockerd, as one node of a test cluster. Each instance
//! has its own node name, root directory and pod /24; on drop it is stopped and every container,
//! network and mount it made is removed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::server::Endpoint;
use crate::{TempDir, eventually};

pub struct Kubelet {
    pub name: String,
    pub pod_cidr: String,
    pub dir: TempDir,
    kubeconfig: PathBuf,
    /// The kubelet API's port (10250 is for real nodes; tests run several kubelets at once).
    pub port: u16,
    extra: Vec<String>,
    child: Option<Child>,
    /// `kubelet --serve-cri` when the node uses a runtime on a unix socket.
    runtime: Option<Child>,
}

/// Whether dockerd answers (the README's test command starts it).
pub fn docker_available() -> bool {
    Command::new("docker").arg("info").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A /24 in 10.244.0.0/16 that no Docker network uses yet.
fn free_pod_cidr(seed: u32) -> String {
    let out = Command::new("docker")
        .args(["network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"])
        .args(
            String::from_utf8_lossy(
                &Command::new("docker").args(["network", "ls", "-q"]).output().map(|o| o.stdout).unwrap_or_default(),
            )
            .split_whitespace(),
        )
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for i in 0..200u32 {
        let n = 20 + (seed + i * 7) % 230;
        let cidr = format!("10.244.{n}.0/24");
        if !out.contains(&cidr) {
            return cidr;
        }
    }
    panic!("no free pod /24 left in 10.244.0.0/16");
}

impl Kubelet {
    pub async fn start(endpoint: &Endpoint, extra: &[&str]) -> Kubelet {
        let mut k = Kubelet::new(endpoint, extra);
        k.spawn();
        k
    }

    fn new(endpoint: &Endpoint, extra: &[&str]) -> Kubelet {
        assert!(docker_available(), "dockerd is not running; the README's test command starts it");
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!("node-{}-{}", std::process::id(), nanos % 100_000);
        let dir = TempDir::new_in("kubelet", Some(std::env::temp_dir())).expect("dir");
        let pod_cidr = free_pod_cidr(std::process::id() ^ nanos);
        Kubelet {
            name,
            pod_cidr,
            dir,
            kubeconfig: endpoint.kubeconfig.clone(),
            port: crate::free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            runtime: None,
        }
    }

    /// A kubelet whose runtime is a separate `kubelet --serve-cri` process on a unix socket
    /// (`--container-runtime-endpoint`).
    pub async fn start_with_remote_runtime(endpoint: &Endpoint) -> Kubelet {
        let mut k = Kubelet::new(endpoint, &[]);
        let socket = k.dir.path().join("cri.sock");
        let log = std::fs::File::create(k.dir.path().join("runtime.log")).expect("log");
        let runtime = crate::child_command(crate::binary("kubelet"))
            .arg("--serve-cri")
            .arg(format!("unix://{}", socket.display()))
            .args(["--hostname-override", &k.name])
            .arg("--root-dir")
            .arg(k.dir.path().join("root"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kubelet --serve-cri");
        k.runtime = Some(runtime);
        let s = socket.clone();
        eventually(Duration::from_secs(30), "the CRI socket", || {
            let s = s.clone();
            async move { s.exists().then_some(()) }
        })
        .await;
        k.extra = vec!["--container-runtime-endpoint".into(), format!("unix://{}", socket.display())];
        k.spawn();
        k
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kubelet.log"))
            .expect("log file");
        let child = crate::child_command(crate::binary("kubelet"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--hostname-override", &self.name, "--pod-cidr", &self.pod_cidr, "--sync-frequency", "2"])
            .args(["--port", &self.port.to_string()])
            .arg("--root-dir")
            .arg(self.dir.path().join("root"))
            .arg("--pod-logs-dir")
            .arg(self.dir.path().join("pods"))
            .args(&self.extra)
            .env("RUST_LOG", std::env::var("E2E_KUBELET_LOG").unwrap_or_else(|_| "info,kubelet=debug".into()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kubelet binary starts");
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kubelet.log")).unwrap_or_default()
    }

    /// Stops the kubelet process only (SIGTERM): its containers keep running.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Containers this node has in Docker: (name, id, status).
    pub fn containers(&self) -> Vec<(String, String, String)> {
        Self::containers_of(&self.name)
    }

    /// Containers node `name` has in Docker: (name, id, status).
    pub fn containers_of(name: &str) -> Vec<(String, String, String)> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label=rkube.instance={name}"),
                "--format",
                "{{.Names}}\t{{.ID}}\t{{.Status}}",
            ])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((f.next()?.to_string(), f.next()?.to_string(), f.next()?.to_string()))
            })
            .collect()
    }

    /// Waits until the Node reports Ready.
    pub async fn wait_ready(&self, client: &kube::Client) {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        let name = self.name.clone();
        let log_dir = self.dir.path().to_path_buf();
        eventually(Duration::from_secs(60), &format!("node {name} Ready (log in {})", log_dir.display()), || {
            let nodes = nodes.clone();
            let name = name.clone();
            async move {
                let n = nodes.get_opt(&name).await.ok().flatten()?;
                let ready = n.status?.conditions?.into_iter().any(|c| c.type_ == "Ready" && c.status == "True");
                ready.then_some(())
            }
        })
        .await;
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for c in [self.child.take(), self.runtime.take()].into_iter().flatten() {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        let ids: Vec<String> = self.containers().into_iter().map(|(_, id, _)| id).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("kpods-{}", self.name)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let root = self.dir.path().to_string_lossy().into_owned();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| m.starts_with(&root)) {
                let _ = Command::new("umount").arg(m).status();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "---- kubelet {} log ----\n{}",
                self.name,
                self.log().lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}
