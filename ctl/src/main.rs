//! `ctl`: the project's kubectl-shaped CLI.
//!
//! Not built yet (no issue yet). Until then the binary refuses to run rather than pretend: it prints
//! one line and exits non-zero, so scripts and tests that start it fail loudly.

fn main() -> std::process::ExitCode {
    eprintln!("ctl: not implemented yet; use kubectl against the apiserver");
    std::process::ExitCode::FAILURE
}
