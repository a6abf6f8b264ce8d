//! `scheduler`: binds pending pods to nodes.
//!
//! Not built yet (issue #5). Until then the binary refuses to run rather than pretend: it prints
//! one line and exits non-zero, so scripts and tests that start it fail loudly.

fn main() -> std::process::ExitCode {
    eprintln!("scheduler: not implemented yet (tracked in issue #5)");
    std::process::ExitCode::FAILURE
}
