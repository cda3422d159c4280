//! `bench-agent`: the privileged agent on each test machine.
//!
//! ```text
//! bench-agent --controller URL [--token T] --rigs FILE [--work-dir DIR]       (daemon)
//! bench-agent io --target PATH --rw randread --bs 4k --iodepth 32 --runtime 10s [--direct] [--verify] [--json]
//! bench-agent run --rigs rigs/sim-lab.toml --rig sim-x1-a --plan plans/smoke.toml --firmware fw.img [--junit F]
//! ```
//! Exit codes: 0 passed, 1 a test failed (I/O error or verify mismatch), 2 bad input or usage,
//! 3 infrastructure error (target missing, io_uring unavailable), 4 timed out.

mod io_cmd;
mod run_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nvfarm_model::ExitCode as Exit;

#[derive(Parser, Debug)]
#[command(
    name = "bench-agent",
    version,
    about = "nvfarm bench agent: runs test plans on this machine's rigs for a farm-controller, or on its own",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Daemon mode: the farm-controller to serve (e.g. http://127.0.0.1:7700).
    #[arg(long, env = "FARM_CONTROLLER")]
    controller: Option<String>,
    /// Bearer token for the controller (role agent).
    #[arg(long, env = "FARM_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Rig inventory file (daemon mode).
    #[arg(long)]
    rigs: Option<PathBuf>,
    /// Agent state: simulated drives, artifact cache, fencing tokens, unsent results.
    #[arg(long, env = "NVFARM_WORK_DIR", default_value = "farm-data/agent")]
    work_dir: PathBuf,
    /// sysfs root for finding real drives by serial or PCI address.
    #[arg(long, env = "NVFARM_SYSFS_ROOT", default_value = "/sys")]
    sysfs_root: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an I/O workload with the io_uring engine (fio's option names).
    Io(io_cmd::IoArgs),
    /// Run a test plan on one rig, without a controller.
    Run(run_cmd::RunArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Passed
            }
            .into();
        }
    };
    let daemon = cli.command.is_none();
    let level = match (cli.verbose, daemon) {
        (0, true) => "info",
        (0, false) => "warn",
        (1, _) => "info",
        _ => "debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("NVFARM_LOG").unwrap_or_else(|_| level.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let code = match cli.command {
        Some(Command::Io(args)) => io_cmd::run(args),
        Some(Command::Run(args)) => run_cmd::run(args, cli.verbose > 0),
        None => daemon_main(
            cli.controller,
            cli.token,
            cli.rigs,
            cli.work_dir,
            cli.sysfs_root,
        ),
    };
    code.into()
}

fn daemon_main(
    controller: Option<String>,
    token: Option<String>,
    rigs: Option<PathBuf>,
    work_dir: PathBuf,
    sysfs_root: PathBuf,
) -> Exit {
    let (Some(controller), Some(rigs)) = (controller, rigs) else {
        eprintln!("bench-agent: error: daemon mode needs --controller URL and --rigs FILE (or use a subcommand: io, run; see --help)");
        return Exit::Usage;
    };
    // Rig file errors are usage errors, reported before connecting anywhere.
    if let Err(e) = bench_agent::rigs::Inventory::load(&rigs, &work_dir) {
        eprintln!("bench-agent: error: {e}");
        return Exit::Usage;
    }
    let cfg = bench_agent::agent::AgentConfig {
        controller,
        token,
        rigs_file: rigs,
        work_dir,
        sysfs: flash_tools::device::Sysfs::new(&sysfs_root),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-agent: error: cannot start the runtime: {e}");
            return Exit::Infrastructure;
        }
    };
    let result = rt.block_on(async move {
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: cancelling running jobs and stopping"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: cancelling running jobs and stopping"),
            }
        };
        bench_agent::agent::run(cfg, shutdown).await
    });
    match result {
        Ok(()) => Exit::Passed,
        Err(e) => {
            eprintln!("bench-agent: error: {e}");
            Exit::Infrastructure
        }
    }
}
