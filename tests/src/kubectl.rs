//! Running the real kubectl (the dispatcher at `kubectl`, which picks the version matching the
//! server's minor, or a pinned `kubectl.1.NN`) and the official Python client against a test
//! apiserver, each with a private HOME and discovery cache.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use crate::TempDir;
use crate::server::Endpoint;

pub struct Kubectl {
    bin: String,
    kubeconfig: PathBuf,
    home: TempDir,
    env: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Fails the test with both streams unless kubectl exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "kubectl failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

/// Where the versioned kubectl binaries live on these machines.
const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

impl Kubectl {
    /// The dispatcher `kubectl`, as a user would run it.
    pub fn new(endpoint: &Endpoint) -> Kubectl {
        Self::with_binary("kubectl".into(), endpoint)
    }

    /// A pinned version, e.g. `"1.27"`.
    pub fn version(minor: &str, endpoint: &Endpoint) -> Kubectl {
        Self::with_binary(format!("{KUBECTL_DIR}/kubectl.{minor}"), endpoint)
    }

    fn with_binary(bin: String, endpoint: &Endpoint) -> Kubectl {
        Kubectl {
            bin,
            kubeconfig: endpoint.kubeconfig.clone(),
            home: TempDir::new("kubectl-home").expect("home"),
            env: vec![],
        }
    }

    /// The same kubectl with an extra environment variable (e.g. to turn WebSockets off).
    pub fn with_env(mut self, key: &str, value: &str) -> Kubectl {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// A kubectl binary (`kubectl` or a path) with a given kubeconfig.
    pub fn with_kubeconfig(bin: &str, kubeconfig: &std::path::Path) -> Kubectl {
        Kubectl {
            bin: bin.to_string(),
            kubeconfig: kubeconfig.to_path_buf(),
            home: TempDir::new("kubectl-home").expect("home"),
            env: vec![],
        }
    }

    /// The path of a pinned kubectl version, e.g. `"1.27"`.
    pub fn versioned_binary(minor: &str) -> String {
        format!("{KUBECTL_DIR}/kubectl.{minor}")
    }

    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    pub fn available(minor: &str) -> bool {
        std::path::Path::new(&format!("{KUBECTL_DIR}/kubectl.{minor}")).exists()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env("KUBECACHEDIR", self.home.path().join("cache"))
            .env_remove("KUBERNETES_SERVICE_HOST");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("kubectl runs"))
    }

    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        Run::from(child.wait_with_output().expect("kubectl output"))
    }

    /// Starts a long-running kubectl (e.g. `get -w`) whose stdout is a pipe.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("kubectl")
    }
}

/// Runs a Python script (with the official `kubernetes` client) against the endpoint; the
/// script gets the kubeconfig path as its first argument.
pub fn python(script: &str, endpoint: &Endpoint, args: &[&str]) -> Run {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&endpoint.kubeconfig)
        .args(args)
        .output()
        .expect("python3 runs");
    Run::from(out)
}
