//! `bench-agent`: the privileged agent on each test machine.
//!
//! ```text
//! bench-agent io --target PATH --rw randread --bs 4k --iodepth 32 --runtime 10s [--direct] [--verify] [--json]
//! bench-agent run --rigs rigs/sim-lab.toml --rig sim-a1 --plan plans/smoke.toml --firmware fw.img [--junit F]
//! ```
//! Exit codes: 0 passed, 1 a test failed (I/O error or verify mismatch), 2 bad input or usage,
//! 3 infrastructure error (target missing, io_uring unavailable), 4 timed out.

mod io_cmd;
mod run_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub const EXIT_PASSED: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_INFRA: u8 = 3;
pub const EXIT_TIMEOUT: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "bench-agent",
    version,
    about = "nvfarm bench agent: io engine, test plans on rigs"
)]
struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
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
            return ExitCode::from(if e.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_PASSED
            });
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("NVFARM_LOG").unwrap_or_else(|_| level.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let code = match cli.command {
        Command::Io(args) => io_cmd::run(args),
        Command::Run(args) => run_cmd::run(args, cli.verbose > 0),
    };
    ExitCode::from(code)
}
