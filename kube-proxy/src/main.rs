//! `kube-proxy`: programs iptables so Services reach their endpoints from this node.

use clap::Parser;
use kube_proxy::app::{ConfigError, Flags, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let flags = match Flags::try_parse() {
        Ok(f) => f,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            eprintln!("kube-proxy: {}", text.lines().next().unwrap_or("bad flags").trim_start_matches("error: "));
            return std::process::ExitCode::from(64);
        }
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    match run(flags, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-proxy: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                std::process::ExitCode::from(64)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
