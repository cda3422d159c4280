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
    pub ios: u64,
    pub bytes: u64,
    pub iops: f64,
    pub bw_bytes_per_sec: f64,
    pub lat: Summary,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JobReport {
    pub job: u32,
    pub elapsed_ms: u64,
    pub read: DirStats,
    pub write: DirStats,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FirstMismatch {
    pub job: u32,
    pub offset: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    pub blocks_checked: u64,
    pub mismatches: u64,
    pub first: Option<FirstMismatch>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IoReport {
    pub target: PathBuf,
    pub engine: Engine,
    /// Ring setup used (e.g. "single-issuer+defer-taskrun, registered buffers").
    pub ring: String,
    pub rw: Rw,
    pub bs: u64,
    pub iodepth: u32,
    pub numjobs: u32,
    pub elapsed_ms: u64,
    pub read: DirStats,
    pub write: DirStats,
    pub jobs: Vec<JobReport>,
    pub verify: Option<VerifyReport>,
}

impl IoReport {
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
