//! The test harness: real etcd on free loopback ports with its own data directory, the
//! apiserver in-process or as the real binary, a raw HTTPS client, and kubectl / Python client
//! runners. Everything a test starts is stopped and removed when its handle drops.

pub mod bench;
pub mod client;
pub mod etcd;
pub mod kubectl;
pub mod kubelet;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh directory under the system temp dir (on tmpfs when available, which makes etcd's
/// fsyncs cheap), removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> std::io::Result<TempDir> {
        Self::new_in(prefix, None)
    }

    /// Under `base` when given, else tmpfs or the temp dir.
    pub fn new_in(prefix: &str, base: Option<PathBuf>) -> std::io::Result<TempDir> {
        let base = base.unwrap_or_else(|| {
            if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() }
        });
        let unique = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        );
        let dir = base.join(unique);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port for a child process to listen on, TCP and UDP, on every address.
///
/// Asking the kernel for port 0 and releasing it is racy: such ports come from the ephemeral
/// range, where any outgoing connection on the machine (a test's client, dockerd, etcd) may take
/// the port before the child binds it. So ports come from below the node-port and ephemeral ranges, are checked
/// free on 0.0.0.0 for TCP and UDP, and are claimed across the suite's processes (nextest runs
/// each test in its own) with a file created exclusively; claims older than an hour are stale.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    // Below 30000, where the Service node-port range (and above it Linux's ephemeral range) starts.
    const COUNT: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let claims = std::env::temp_dir().join("rkube-e2e-ports");
    let _ = std::fs::create_dir_all(&claims);
    let seed = std::process::id().wrapping_mul(2_654_435_761)
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    for _ in 0..COUNT {
        let port = (FIRST + (seed.wrapping_add(NEXT.fetch_add(7_919, Ordering::Relaxed)) % COUNT)) as u16;
        if claim(&claims.join(port.to_string())) && bindable(port) {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + COUNT)
}

fn claim(path: &Path) -> bool {
    let fresh = || std::fs::OpenOptions::new().write(true).create_new(true).open(path).is_ok();
    if fresh() {
        return true;
    }
    let stale = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(3600));
    stale && std::fs::remove_file(path).is_ok() && fresh()
}

fn bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() && std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok()
}

/// The directory holding the workspace's built binaries: `target/<profile>` for tests
/// (which run from `target/<profile>/deps`) and for the harness's own binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable dir");
    if dir.ends_with("deps") { dir.parent().expect("profile dir").to_path_buf() } else { dir.to_path_buf() }
}

/// A command for a child process that dies with its parent, even when the parent is killed and
/// no destructor runs (a test timed out, the benchmark was interrupted): `setpriv --pdeathsig`,
/// from util-linux. The signal follows the spawning thread, so spawn from a thread that lives as
/// long as the child should (the test's or main thread).
pub fn child_command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    if std::path::Path::new("/usr/bin/setpriv").exists() {
        let mut c = std::process::Command::new("/usr/bin/setpriv");
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

/// Path of a workspace binary; panics with how to build it if it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --bins` first (the README's test command does)",
        path.display()
    );
    path
}
