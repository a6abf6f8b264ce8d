//! `controller-manager`: the control loops that keep desired state.
//!
//! Not built yet (issue #6). Until then the binary refuses to run rather than pretend: it prints
//! one line and exits non-zero, so scripts and tests that start it fail loudly.

fn main() -> std::process::ExitCode {
    eprintln!("controller-manager: not implemented yet (tracked in issue #6)");
    std::process::ExitCode::FAILURE
}
