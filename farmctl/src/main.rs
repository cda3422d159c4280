//! `farmctl`: what people and pipelines type.
//!
//! - [`cli`]: the command line; [`commands`]: one module per command group;
//! - [`client`]: connecting to the controller and turning its errors into exit codes;
//! - [`follow`]: following a job's log stream across reconnects; [`upload`]: sending firmware;
//! - [`render`]: tables for people, JSON for tools.

mod cli;
mod client;
mod commands;
mod follow;
mod render;
mod upload;

use clap::Parser;
use nvfarm_model::ExitCode;

fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Passed
            }
            .into();
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("NVFARM_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("farmctl: error: cannot start the async runtime: {e}");
            return ExitCode::Infrastructure.into();
        }
    };
    match rt.block_on(commands::dispatch(cli)) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("farmctl: error: {}", e.message);
            e.code.into()
        }
    }
}
