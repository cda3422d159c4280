//! `bench-agent io`: the io engine from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use bench_agent::io::{self, Engine, IoError, IoSpec};
use nvfarm_model::io::{IoOptions, Rw};
use nvfarm_model::ExitCode;
use nvme_spec::units::{parse_duration, parse_size};

#[derive(Args, Debug)]
pub struct IoArgs {
    /// File, block device (/dev/nvme0n1), NVMe generic char device (/dev/ng0n1, uses uring_cmd passthrough),
    /// or a simulated drive (sim:DIR, or its directory: NVMe Read/Write to the simulated controller).
    #[arg(long)]
    target: PathBuf,
    /// read, write, randread, randwrite or randrw.
    #[arg(long)]
    rw: Rw,
    /// Percentage of reads for randrw.
    #[arg(long, default_value_t = 50)]
    rwmixread: u8,
    /// Block size (e.g. 4k, 128k).
    #[arg(long, value_parser = parse_size, default_value = "4k")]
    bs: u64,
    /// I/Os in flight per job.
    #[arg(long, default_value_t = 1)]
    iodepth: u32,
    /// How long to run (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    runtime: Option<Duration>,
    /// Bytes to transfer per job; also the size a new file is created with.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// O_DIRECT (bypass the page cache).
    #[arg(long)]
    direct: bool,
    /// Write a self-checking pattern and check every block read back.
    #[arg(long)]
    verify: bool,
    /// Parallel jobs, each with its own ring and its own slice of the target.
    #[arg(long, default_value_t = 1)]
    numjobs: u32,
    /// uring (read/write), uring_cmd (NVMe passthrough) or sim (NVMe commands to a simulated drive); default:
    /// uring_cmd for char devices, sim for a simulated drive, else uring.
    #[arg(long)]
    engine: Option<String>,
    /// Seed for random offsets and the verify pattern; a read-only --verify run given one also checks that every
    /// block was written with it (so data an older run left behind is found).
    #[arg(long)]
    seed: Option<u64>,
    /// Ring setup: auto (single-issuer + cooperative task running), defer, coop or plain.
    #[arg(long, default_value = "auto")]
    ring: bench_agent::io::RingMode,

    /// Fault injection, to test error handling: report the Nth completion of each job as failed (EIO) while the
    /// other I/Os are still in flight.
    #[arg(long, value_name = "N")]
    inject_error_at: Option<u64>,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: IoArgs) -> ExitCode {
    use std::os::unix::fs::FileTypeExt;
    let mut a = a;
    if let Some(dir) = a.target.to_str().and_then(|t| t.strip_prefix("sim:")) {
        a.target = PathBuf::from(dir);
        if a.engine.is_none() {
            a.engine = Some("sim".into());
        }
    }
    let engine = match a.engine.as_deref() {
        Some("uring") => Engine::Uring,
        Some("uring_cmd") => Engine::UringCmd,
        Some("sim") => Engine::SimNvme,
        Some(other) => {
            eprintln!(
                "bench-agent: error: invalid --engine '{other}': expected uring, uring_cmd or sim"
            );
            return ExitCode::Usage;
        }
        None if a.target.join(flash_tools::sim::state::STATE_FILE).is_file() => Engine::SimNvme,
        None => match std::fs::metadata(&a.target) {
            Ok(m) if m.file_type().is_char_device() => Engine::UringCmd,
            _ => Engine::Uring,
        },
    };
    let options = IoOptions {
        rwmixread: a.rwmixread,
        runtime: a.runtime,
        size: a.size,
        direct: a.direct,
        verify: a.verify,
        numjobs: a.numjobs,
        ..IoOptions::new(a.rw, a.bs, a.iodepth)
    };
    let mut spec = IoSpec::new(&a.target, options, engine);
    if let Some(s) = a.seed {
        spec.seed = s;
        spec.check_seed = true;
    }
    spec.ring = a.ring;
    spec.inject_error_at = a.inject_error_at;

    match io::run(&spec) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            if a.json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializable")
                );
            } else {
                let _ = write!(out, "{report}");
            }
            if report.verified_ok() {
                ExitCode::Passed
            } else {
                ExitCode::Failed
            }
        }
        Err(e) => {
            eprintln!("bench-agent: error: {e}");
            match e {
                IoError::Spec(_) => ExitCode::Usage,
                IoError::Io { .. } if !e.is_device_gone() => ExitCode::Failed,
                IoError::Cancelled { .. } => ExitCode::TimedOut,
                _ => ExitCode::Infrastructure,
            }
        }
    }
}
