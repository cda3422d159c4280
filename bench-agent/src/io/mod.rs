//! The io engine behind `bench-agent io` and the `io` plan step.
//!
//! fio's vocabulary (`rw`, `bs`, `iodepth`, `runtime`, `size`, `direct`, `verify`, `numjobs`, `rwmixread`) over
//! two io_uring backends, one ring per job thread:
//! - [`uring`]: reads and writes on a file or block device, with registered buffers and files, optional O_DIRECT,
//!   and single-issuer / deferred-task-run rings where the kernel has them;
//! - [`uring_cmd`]: NVMe Read/Write commands through `IORING_OP_URING_CMD` on a generic char device
//!   (`/dev/ngXnY`), with 128-byte SQEs and 32-byte CQEs;
//! - [`sim_nvme`]: NVMe Read/Write commands to a simulated controller (the default for simulated rigs), so the
//!   simulator's faults, MDTS, resets and SMART counting apply to the I/O.
//!
//! Each job keeps `iodepth` commands in flight: it fills every free slot, submits them with one syscall, and reaps
//! every completion available. Latencies go into a log-linear [`histogram::Histogram`]. With `verify`, writes
//! carry the self-checking [`pattern`], reads of blocks written in this run are checked as they complete, and
//! after the timed phase every written block is read back and checked; the first mismatch is reported.

pub mod buffers;
pub mod histogram;
mod inflight;
mod job;
pub mod pattern;
mod report;
pub mod sim_nvme;
mod spec;
pub mod split;
mod target;
pub mod uring;
pub mod uring_cmd;

pub use report::{DirStats, FirstMismatch, IoReport, JobReport, VerifyReport};
pub use spec::{Drained, Engine, IoError, IoFailure, IoSpec, RingMode};

use histogram::Histogram;
use job::{run_job, JobRun, Region};

/// Runs the spec: `numjobs` threads, each with its own ring over its own slice of the target.
pub fn run(spec: &IoSpec) -> Result<IoReport, IoError> {
    spec.validate()?;
    let total = target::target_size(spec)?;
    let mut per_job = total / spec.options.numjobs as u64;
    if let Some(size) = spec.options.size {
        per_job = per_job.min(size);
    }
    let per_job = per_job / spec.options.bs * spec.options.bs;
    if per_job == 0 {
        return Err(IoError::Target {
            path: spec.target.clone(),
            reason: format!(
                "{total} bytes cannot hold {} job(s) of {}-byte blocks",
                spec.options.numjobs, spec.options.bs
            ),
        });
    }
    let results: Vec<Result<(JobRun, String), IoError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.options.numjobs)
            .map(|job| {
                s.spawn(move || {
                    let region = Region {
                        start: job as u64 * per_job,
                        len: per_job,
                    };
                    match spec.engine {
                        Engine::Uring => {
                            let mut ring = uring::FileRing::open(spec)?;
                            Ok((run_job(&mut ring, spec, job, region)?, ring.describe()))
                        }
                        Engine::UringCmd => {
                            let mut ring = uring_cmd::CmdRing::open(spec)?;
                            Ok((run_job(&mut ring, spec, job, region)?, ring.describe()))
                        }
                        Engine::SimNvme => {
                            let mut ring = sim_nvme::SimRing::open(spec)?;
                            Ok((run_job(&mut ring, spec, job, region)?, ring.describe()))
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("io job thread panicked"))
            .collect()
    });
    let mut jobs = vec![];
    let (mut rh, mut wh) = (Histogram::default(), Histogram::default());
    let mut verify = VerifyReport::default();
    let mut ring = String::new();
    for r in results {
        let (
            JobRun {
                report: job,
                read: r_h,
                write: w_h,
                verify: v,
            },
            desc,
        ) = r?;
        rh.merge(&r_h);
        wh.merge(&w_h);
        verify.blocks_checked += v.blocks_checked;
        verify.mismatches += v.mismatches;
        if let Some(f) = v.first {
            if verify
                .first
                .as_ref()
                .is_none_or(|cur| (f.job, f.offset) < (cur.job, cur.offset))
            {
                verify.first = Some(f);
            }
        }
        ring = desc;
        jobs.push(job);
    }
    let elapsed_ms = jobs.iter().map(|j| j.elapsed_ms).max().unwrap_or(0);
    let secs = (elapsed_ms as f64 / 1000.0).max(1e-9);
    let sum = |f: fn(&JobReport) -> u64| jobs.iter().map(f).sum::<u64>();
    let (rb, wb) = (sum(|j| j.read.bytes), sum(|j| j.write.bytes));
    Ok(IoReport {
        target: spec.target.clone(),
        engine: spec.engine,
        ring,
        rw: spec.options.rw,
        bs: spec.options.bs,
        iodepth: spec.options.iodepth,
        numjobs: spec.options.numjobs,
        elapsed_ms,
        read: DirStats {
            ios: rh.count(),
            bytes: rb,
            iops: rh.count() as f64 / secs,
            bw_bytes_per_sec: rb as f64 / secs,
            lat: rh.summary(),
        },
        write: DirStats {
            ios: wh.count(),
            bytes: wb,
            iops: wh.count() as f64 / secs,
            bw_bytes_per_sec: wb as f64 / secs,
            lat: wh.summary(),
        },
        jobs,
        verify: spec.options.verify.then_some(verify),
    })
}
