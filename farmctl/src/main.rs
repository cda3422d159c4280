//! `farmctl`: what people and pipelines type.
//!
//! ```text
//! farmctl rigs [--labels k=v,...]
//! farmctl reserve (--rig NAME | --labels k=v,...) [--for DURATION] [--wait]      farmctl release LEASE_ID
//! farmctl run --firmware FILE --plan FILE (--rig NAME | --labels k=v,...) [--junit FILE] [--timeout DURATION]
//! farmctl sweep --firmware FILE --plan FILE [--labels k=v,...] [--name NAME] [--junit FILE]
//! farmctl jobs | job ID | logs ID [--follow] | queue | cancel ID | rig quarantine|restore NAME
//! ```
//! Global: `--controller URL` (FARM_CONTROLLER, default http://127.0.0.1:7700), `--token` (FARM_TOKEN), `--json`.
//!
//! Exit codes of `run` and `sweep`: 0 all passed, 1 a test failed, 2 bad input or usage, 3 infrastructure error
//! (no matching rig, agent lost, rig unusable, controller unreachable), 4 timed out or cancelled.

mod client;
mod commands;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::{EXIT_PASSED, EXIT_USAGE};

#[derive(Parser, Debug)]
#[command(
    name = "farmctl",
    version,
    about = "nvfarm: flash and test firmware on real drives, reserve rigs, run sweeps"
)]
pub struct Cli {
    /// The farm-controller's gRPC address.
    #[arg(
        long,
        global = true,
        env = "FARM_CONTROLLER",
        default_value = "http://127.0.0.1:7700"
    )]
    pub controller: String,
    /// Bearer token (needed when the controller has tokens configured).
    #[arg(long, global = true, env = "FARM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: commands::Command,
}

#[derive(Subcommand, Debug)]
pub enum RigAction {
    /// Take a rig out of service with a reason.
    Quarantine {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Return a quarantined, maintenance or offline rig to service.
    Restore { name: String },
    /// Put a rig into maintenance.
    Maintenance {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_PASSED
            });
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("NVFARM_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(commands::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("farmctl: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
