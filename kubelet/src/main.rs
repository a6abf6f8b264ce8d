//! `kubelet`: registers this node and runs the pods bound to it on Docker through CRI.

use clap::Parser;
use kubelet::app::{Flags, run, serve_cri};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let flags = Flags::parse();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    let result = if flags.serve_cri.is_some() { serve_cri(flags, shutdown).await } else { run(flags, shutdown).await };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kubelet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
