//! `kubelet`: runs the pods bound to its node on Docker through CRI.
//!
//! Not built yet (issue #4). Until then the binary refuses to run rather than pretend: it prints
//! one line and exits non-zero, so scripts and tests that start it fail loudly.

fn main() -> std::process::ExitCode {
    eprintln!("kubelet: not implemented yet (tracked in issue #4)");
    std::process::ExitCode::FAILURE
}
