//! What an io run measured: per-direction IOPS, bandwidth and latency, per-job results, verify results, and
//! the fio-like text rendering.

use std::fmt;
use std::path::PathBuf;

use nvfarm_model::io::Rw;
use serde::{Deserialize, Serialize};

use super::histogram::Summary;
use super::spec::Engine;

/// Per-direction results.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DirStats {
    /// Completed I/Os.
    pub ios: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// I/Os per second.
    pub iops: f64,
    /// Bandwidth.
    pub bw_bytes_per_sec: f64,
    /// Completion latency.
    pub lat: Summary,
}

/// One job's results.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobReport {
    /// The job's number.
    pub job: u32,
    /// Its timed phase.
    pub elapsed_ms: u64,
    /// Reads.
    pub read: DirStats,
    /// Writes.
    pub write: DirStats,
}

/// The first bad block a verify found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FirstMismatch {
    /// The job's number.
    pub job: u32,
    /// Its byte offset on the target.
    pub offset: u64,
    /// What was wrong with it.
    pub reason: String,
}

/// What verification found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Blocks checked.
    pub blocks_checked: u64,
    /// Blocks that were wrong.
    pub mismatches: u64,
    /// The first one.
    pub first: Option<FirstMismatch>,
}

/// A whole io run's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IoReport {
    /// What it ran on.
    pub target: PathBuf,
    /// The backend.
    pub engine: Engine,
    /// Ring setup used (e.g. "single-issuer+defer-taskrun, registered buffers").
    pub ring: String,
    /// The access pattern.
    pub rw: Rw,
    /// Block size.
    pub bs: u64,
    /// I/Os in flight per job.
    pub iodepth: u32,
    /// Jobs.
    pub numjobs: u32,
    /// Its timed phase.
    pub elapsed_ms: u64,
    /// Reads.
    pub read: DirStats,
    /// Writes.
    pub write: DirStats,
    /// Each job's results.
    pub jobs: Vec<JobReport>,
    /// Verification results (with `verify`).
    pub verify: Option<VerifyReport>,
}

impl IoReport {
    /// No block failed verification (or nothing was verified).
    pub fn verified_ok(&self) -> bool {
        self.verify.as_ref().is_none_or(|v| v.mismatches == 0)
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1}us", ns as f64 / 1e3)
    } else {
        format!("{ns}ns")
    }
}

impl fmt::Display for IoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} bs={} iodepth={} numjobs={} engine={:?} ({}) {:.2}s",
            self.target.display(),
            self.rw,
            self.bs,
            self.iodepth,
            self.numjobs,
            self.engine,
            self.ring,
            self.elapsed_ms as f64 / 1000.0
        )?;
        for (name, d) in [("read", &self.read), ("write", &self.write)] {
            if d.ios == 0 {
                continue;
            }
            writeln!(
                f,
                "  {name:<5}: IOPS={:.0} BW={:.1}MiB/s ios={} lat min={} mean={} p50={} p90={} p99={} p99.9={} max={}",
                d.iops,
                d.bw_bytes_per_sec / (1024.0 * 1024.0),
                d.ios,
                fmt_ns(d.lat.min_ns),
                fmt_ns(d.lat.mean_ns),
                fmt_ns(d.lat.p50_ns),
                fmt_ns(d.lat.p90_ns),
                fmt_ns(d.lat.p99_ns),
                fmt_ns(d.lat.p99_9_ns),
                fmt_ns(d.lat.max_ns)
            )?;
        }
        if let Some(v) = &self.verify {
            match &v.first {
                None => writeln!(f, "  verify: {} blocks checked, all good", v.blocks_checked)?,
                Some(m) => writeln!(
                    f,
                    "  verify: {} of {} blocks bad; first at offset {:#x} (job {}): {}",
                    v.mismatches, v.blocks_checked, m.offset, m.job, m.reason
                )?,
            }
        }
        Ok(())
    }
}
