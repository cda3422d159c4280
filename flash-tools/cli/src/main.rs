//! `nvme-flash`: inspect NVMe drives, update their firmware, and make simulated drives and images.
//!
//! ```text
//! nvme-flash DEVICE info | id-ns | log ... | update IMAGE | fw-download | fw-commit | reset | self-test | ...
//! nvme-flash sim create | image | fault | power-cycle | power | status
//! nvme-flash list
//! ```
//! DEVICE is `/dev/nvmeN`, `serial=...`, `pci=...` or `sim:DIR`.
//!
//! Exit codes: 0 success; 1 the drive rejected a command or the update did not verify; 2 bad input or usage;
//! 3 the drive could not be reached (absent, gone, OS error); 4 a command timed out.

#[macro_use]
mod output;
mod device_cmd;
mod sim_cmd;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use flash_tools::device::{DeviceError, Sysfs};
use flash_tools::sim::SimError;
use flash_tools::NvmeError;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREACHABLE: u8 = 3;
pub const EXIT_TIMEOUT: u8 = 4;

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Print machine-readable JSON on stdout (field names as nvme-cli's `-o json` where it has the field).
    #[arg(long, global = true)]
    pub json: bool,
    /// Per-command timeout (e.g. 10s, 500ms).
    #[arg(long, global = true, value_parser = nvme_spec::units::parse_duration, default_value = "60s")]
    pub timeout: std::time::Duration,
    /// sysfs root used to find drives by serial or PCI address (a simulated bus directory works too).
    #[arg(long, global = true, env = "NVFARM_SYSFS_ROOT", default_value = "/sys")]
    pub sysfs_root: std::path::PathBuf,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Common {
    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(&self.sysfs_root)
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "nvme-flash",
    version,
    about = "Inspect NVMe drives, update their firmware, and make simulated drives",
    override_usage = "nvme-flash [OPTIONS] <DEVICE> <COMMAND>\n       nvme-flash [OPTIONS] sim <COMMAND>\n       nvme-flash [OPTIONS] list",
    after_help = "DEVICE is /dev/nvmeN, serial=SERIAL, pci=DDDD:BB:DD.F or sim:DIR.\n\
Device commands: info, id-ns, log (smart|fw|error|selftest|effects|sanitize), update IMAGE, fw-download, fw-commit,\n\
reset, self-test, format, sanitize, get-feature, set-feature, wait. `nvme-flash DEVICE help` lists them in full.\n\n\
Exit codes: 0 success, 1 the drive rejected a command or the update failed verification, 2 bad input or usage,\n\
3 the drive could not be reached, 4 a command timed out."
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand, Debug)]
enum Top {
    /// Make and manage simulated drives and firmware images.
    #[command(subcommand)]
    Sim(sim_cmd::SimCommand),
    /// List NVMe controllers under the sysfs root.
    List,
    #[command(external_subcommand)]
    Device(Vec<String>),
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
        }
    }
    pub fn usage(msg: impl std::fmt::Display) -> Self {
        Failure {
            code: EXIT_USAGE,
            error: anyhow::anyhow!("{msg}"),
        }
    }
}

impl From<NvmeError> for Failure {
    fn from(e: NvmeError) -> Self {
        let code = match &e {
            NvmeError::Status { .. } => EXIT_FAILED,
            e if e.is_timeout() => EXIT_TIMEOUT,
            _ => EXIT_UNREACHABLE,
        };
        Failure::new(code, e)
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::Nvme(n) => n.into(),
            e if e.is_timeout() => Failure::new(EXIT_TIMEOUT, e),
            e => Failure::new(EXIT_UNREACHABLE, e),
        }
    }
}

impl From<SimError> for Failure {
    fn from(e: SimError) -> Self {
        let code = match &e {
            SimError::Config { .. }
            | SimError::Exists { .. }
            | SimError::FaultFile { .. }
            | SimError::Image(_) => EXIT_USAGE,
            _ => EXIT_UNREACHABLE,
        };
        Failure::new(code, e)
    }
}

pub type CmdResult = Result<u8, Failure>;

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("NVFARM_LOG").unwrap_or_else(|_| level.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    init_tracing(cli.common.verbose);
    let result = match cli.command {
        Top::Sim(cmd) => sim_cmd::run(cmd, &cli.common),
        Top::List => device_cmd::list(&cli.common),
        Top::Device(args) => device_cmd::run(args, cli.common),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("nvme-flash: error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
