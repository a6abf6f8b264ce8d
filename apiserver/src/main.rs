//! `apiserver`: flags in, [`apiserver::run`] until SIGTERM or SIGINT; a second signal exits at once.

use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opts = apiserver::Options::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| match opts.verbosity {
        0 => "info".into(),
        1..=3 => "info,apiserver=debug".into(),
        _ => "debug,apiserver=trace".into(),
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    let config = match opts.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("apiserver: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    match apiserver::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apiserver: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("Shutting down");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    std::process::exit(1);
}
