//! `farm-controller [--config FILE] [--data-dir DIR] [--listen ADDR] [--http ADDR] [--check-config]`
//!
//! Runs in the foreground, logs with tracing (RUST_LOG / NVFARM_LOG), stops cleanly on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use farm_controller::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "farm-controller",
    version,
    about = "nvfarm controller: leases, queue, jobs, results"
)]
struct Args {
    /// Configuration file (TOML); see the crate docs for its keys.
    #[arg(long, env = "FARM_CONFIG")]
    config: Option<PathBuf>,
    /// Where the store and artifacts live (default ./farm-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// gRPC address (default 127.0.0.1:7700).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Dashboard and /metrics address (default 127.0.0.1:7701).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Check the configuration (file and flags) and exit: 0 if it can be served, otherwise the mistake.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NVFARM_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(f) => Config::load(f)?,
        None => Config::default(),
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(h) = args.http {
        cfg.http = h;
    }
    if args.check_config {
        cfg.check_exposure().map_err(anyhow::Error::msg)?;
        println!(
            "configuration ok: gRPC {}, HTTP {}, data {}, {} token(s), {} webhook(s)",
            cfg.listen,
            cfg.http,
            cfg.data_dir.display(),
            cfg.tokens.len(),
            cfg.webhooks.len()
        );
        return Ok(());
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        }
    };
    Ok(farm_controller::server::serve(cfg, shutdown).await?)
}
