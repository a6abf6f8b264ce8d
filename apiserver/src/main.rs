//! `apiserver`: flags in, [`apiserver::run`] on a runtime of `--worker-threads` threads until SIGTERM
//! or SIGINT; a second signal exits at once.

use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let opts = apiserver::Options::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| match opts.verbosity {
        0 => "info".into(),
        1..=3 => "info,apiserver=debug".into(),
        _ => "debug,apiserver=trace".into(),
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).init();
    let threads = opts.runtime_threads();
    let config = match opts.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("apiserver: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("apiserver: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    runtime.spawn(signals(shutdown.clone()));
    match runtime.block_on(apiserver::run(config, shutdown)) {
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

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
