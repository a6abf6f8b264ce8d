//! `kube-proxy`: programs iptables for Services on its node.
//!
//! Not built yet (issue #7). Until then the binary refuses to run rather than pretend: it prints
//! one line and exits non-zero, so scripts and tests that start it fail loudly.

fn main() -> std::process::ExitCode {
    eprintln!("kube-proxy: not implemented yet (tracked in issue #7)");
    std::process::ExitCode::FAILURE
}
