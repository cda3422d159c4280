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

use clap::{Args, Parser, Subcommand};
pub use nvfarm_model::ExitCode;

use flash_tools::device::{DeviceError, Sysfs};
use flash_tools::sim::SimError;
use flash_tools::NvmeError;

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
    Sim(Box<sim_cmd::SimCommand>),
    /// List NVMe controllers under the sysfs root.
    List,
    #[command(external_subcommand)]
    Device(Vec<String>),
}

/// A command's error with the exit code it maps to.
#[derive(Debug)]
pub struct CmdError {
    pub code: ExitCode,
    pub error: anyhow::Error,
}

impl CmdError {
    pub fn new(code: ExitCode, error: impl Into<anyhow::Error>) -> Self {
        CmdError {
            code,
            error: error.into(),
        }
    }
    pub fn usage(msg: impl std::fmt::Display) -> Self {
        CmdError {
            code: ExitCode::Usage,
            error: anyhow::anyhow!("{msg}"),
        }
    }
}

impl From<NvmeError> for CmdError {
    fn from(e: NvmeError) -> Self {
        let code = match &e {
            NvmeError::Status { .. } => ExitCode::Failed,
            e if e.is_timeout() => ExitCode::TimedOut,
            _ => ExitCode::Infrastructure,
        };
        CmdError::new(code, e)
    }
}

impl From<DeviceError> for CmdError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::Nvme(n) => n.into(),
            e if e.is_timeout() => CmdError::new(ExitCode::TimedOut, e),
            e => CmdError::new(ExitCode::Infrastructure, e),
        }
    }
}

impl From<SimError> for CmdError {
    fn from(e: SimError) -> Self {
        let code = match &e {
            SimError::Config { .. }
            | SimError::Exists { .. }
            | SimError::FaultFile { .. }
            | SimError::Image(_) => ExitCode::Usage,
            _ => ExitCode::Infrastructure,
        };
        CmdError::new(code, e)
    }
}

pub type CmdResult = Result<ExitCode, CmdError>;

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

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
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
    init_tracing(cli.common.verbose);
    let result = match cli.command {
        Top::Sim(cmd) => sim_cmd::run(*cmd, &cli.common),
        Top::List => device_cmd::list(&cli.common),
        Top::Device(args) => device_cmd::run(args, cli.common),
    };
    match result {
        Ok(code) => code.into(),
        Err(f) => {
            eprintln!("nvme-flash: error: {:#}", f.error);
            f.code.into()
        }
    }
}
