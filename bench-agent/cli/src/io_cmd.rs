//! `bench-agent io`: the io engine from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use bench_agent::io::{self, Engine, IoError, IoSpec, Rw};
use nvme_spec::units::{parse_duration, parse_size};

use crate::{EXIT_FAILED, EXIT_INFRA, EXIT_PASSED, EXIT_USAGE};

#[derive(Args, Debug)]
pub struct IoArgs {
    /// File, block device (/dev/nvme0n1) or NVMe generic char device (/dev/ng0n1, uses uring_cmd passthrough).
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
    /// uring (read/write) or uring_cmd (NVMe passthrough); default: uring_cmd for char devices, else uring.
    #[arg(long)]
    engine: Option<String>,
    /// Seed for random offsets and the verify pattern.
    #[arg(long)]
    seed: Option<u64>,
    /// Ring setup: auto (single-issuer + cooperative task running), defer, coop or plain.
    #[arg(long, default_value = "auto")]
    ring: bench_agent::io::RingMode,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: IoArgs) -> u8 {
    use std::os::unix::fs::FileTypeExt;
    let engine = match a.engine.as_deref() {
        Some("uring") => Engine::Uring,
        Some("uring_cmd") => Engine::UringCmd,
        Some(other) => {
            eprintln!(
                "bench-agent: error: invalid --engine '{other}': expected uring or uring_cmd"
            );
            return EXIT_USAGE;
        }
        None => match std::fs::metadata(&a.target) {
            Ok(m) if m.file_type().is_char_device() => Engine::UringCmd,
            _ => Engine::Uring,
        },
    };
    let mut spec = IoSpec::new(&a.target, a.rw, a.bs, a.iodepth);
    spec.rwmixread = a.rwmixread;
    spec.runtime = a.runtime;
    spec.size = a.size;
    spec.direct = a.direct;
    spec.verify = a.verify;
    spec.numjobs = a.numjobs;
    spec.engine = engine;
    if let Some(s) = a.seed {
        spec.seed = s;
    }
    spec.ring = a.ring;

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
                EXIT_PASSED
            } else {
                EXIT_FAILED
            }
        }
        Err(e) => {
            eprintln!("bench-agent: error: {e}");
            match e {
                IoError::Spec { .. } => EXIT_USAGE,
                IoError::Io { .. } if !e.is_device_gone() => EXIT_FAILED,
                _ => EXIT_INFRA,
            }
        }
    }
}
