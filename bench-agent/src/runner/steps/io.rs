//! `io`: an io workload on the rig's drive with the io engine, checked against the step's thresholds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nvfarm_model::plan::{IoStep, IoTarget};
use nvfarm_model::Outcome;

use super::super::context::{Ctx, Fail, StepLog, StepResult};
use crate::io::{self, Engine, IoError, IoReport, IoSpec};

/// Where the step's data goes, and with which backend.
fn target(ctx: &Ctx<'_>, io: &IoStep, device: &str) -> Result<(PathBuf, Engine), Fail> {
    let sim = ctx.rig.sim_dir().map(|d| d.to_path_buf());
    Ok(match (&io.target, sim) {
        // Through the simulated controller, as I/O reaches a drive.
        (IoTarget::Namespace, Some(dir)) => (dir, Engine::SimNvme),
        (IoTarget::Namespace, None) => (PathBuf::from(format!("/dev/{device}n1")), Engine::Uring),
        (IoTarget::Media, Some(dir)) => (dir.join(flash_tools::sim::NAMESPACE_FILE), Engine::Uring),
        (IoTarget::Media, None) => {
            return Err(Fail::new(
                Outcome::Invalid,
                "target = \"media\" is the media file of a simulated drive; this rig's drive is real: use target = \"namespace\"",
            ))
        }
        (IoTarget::Generic, None) => (
            PathBuf::from(format!("/dev/{}n1", device.replacen("nvme", "ng", 1))),
            Engine::UringCmd,
        ),
        (IoTarget::Generic, Some(_)) => {
            return Err(Fail::error(
                "a simulated drive has no generic char device; use target = \"namespace\"",
            ))
        }
        (IoTarget::Path(p), _) => {
            use std::os::unix::fs::FileTypeExt;
            let chr = std::fs::metadata(p)
                .map(|m| m.file_type().is_char_device())
                .unwrap_or(false);
            (
                p.clone(),
                if chr { Engine::UringCmd } else { Engine::Uring },
            )
        }
    })
}

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    name: &str,
    io: &IoStep,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    // Preflight through the controller: present, and willing to do I/O (a drive whose firmware failed to come
    // up properly answers admin commands but not reads).
    let d = ctx.drive(deadline)?;
    let c = d.controller();
    let ns = c
        .identify_namespace(1)
        .map_err(|e| Fail::nvme("Identify Namespace 1", &e))?;
    let bs = ns.block_size() as u32;
    let mut probe = vec![0u8; bs as usize];
    c.read(1, 0, &mut probe, bs)
        .map_err(|e| Fail::nvme("the drive rejects I/O: Read of LBA 0", &e))?;
    let (target, engine) = target(ctx, io, &c.device_name())?;
    let mut spec = IoSpec::new(target.clone(), io.options.clone(), engine);
    if let Some(seed) = io.seed {
        spec.seed = seed;
        spec.check_seed = true;
    }
    spec.cancel = Some(ctx.opts.cancel.clone());
    let left = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(Duration::from_secs(5));
    spec.options.runtime = io.options.runtime.map(|r| {
        if r > left {
            log.line(format!(
                "runtime capped to {} by the step timeout",
                humantime::format_duration(left)
            ));
        }
        r.min(left).max(Duration::from_millis(100))
    });
    let o = &io.options;
    log.line(format!(
        "{} {} bs={} iodepth={} numjobs={}{}{} on {}",
        engine.describe(),
        o.rw,
        o.bs,
        o.iodepth,
        o.numjobs,
        if o.direct { " direct" } else { "" },
        if o.verify { " verify" } else { "" },
        target.display()
    ));
    let t0 = Instant::now();
    let r = io::run(&spec).map_err(|e| match &e {
        IoError::Cancelled { .. } => Fail::new(Outcome::Cancelled, format!("cancelled: {e}")),
        IoError::Io { .. } if !e.is_device_gone() => Fail::failed(format!("I/O failed: {e}")),
        _ => Fail::error(format!("io engine: {e}")),
    })?;
    if engine == Engine::Uring && io.target == IoTarget::Media {
        // The simulator did not see this I/O: tell it, so its SMART counters move as a drive's would.
        ctx.rig.account_host_io(&r, t0.elapsed());
    }
    for line in r.to_string().lines() {
        log.line(line.trim_start());
    }
    let metrics = record_metrics(&r, log);
    let mut bad = check(io, &r);
    if let Some(max) = io.thresholds.max_regression_pct {
        match ctx.previous.get(name) {
            None => log.line(
                "no previous run of this step on this rig: this run is the baseline for the next one",
            ),
            Some(before) => {
                let (lines, worse) = super::super::history::compare(before, &metrics, max);
                for l in lines {
                    log.line(format!("baseline: {l}"));
                }
                bad.extend(worse);
            }
        }
    }
    if !bad.is_empty() {
        return Err(Fail::failed(bad.join("; ")));
    }
    Ok(format!(
        "{:.0} IOPS, {:.1} MiB/s{}",
        r.read.iops + r.write.iops,
        (r.read.bw_bytes_per_sec + r.write.bw_bytes_per_sec) / 1048576.0,
        r.verify
            .as_ref()
            .map(|v| format!(", {} blocks verified", v.blocks_checked))
            .unwrap_or_default()
    ))
}

/// Records the run's metrics in the step's log and returns them.
fn record_metrics(r: &IoReport, log: &mut StepLog<'_>) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for (name, d) in [("read", &r.read), ("write", &r.write)] {
        if d.ios > 0 {
            out.insert(format!("{name}_iops"), d.iops);
            out.insert(
                format!("{name}_bw_mib_s"),
                d.bw_bytes_per_sec / (1024.0 * 1024.0),
            );
            out.insert(format!("{name}_lat_mean_us"), d.lat.mean_ns as f64 / 1000.0);
            out.insert(format!("{name}_lat_p50_us"), d.lat.p50_ns as f64 / 1000.0);
            out.insert(format!("{name}_lat_p99_us"), d.lat.p99_ns as f64 / 1000.0);
            out.insert(
                format!("{name}_lat_p99_9_us"),
                d.lat.p99_9_ns as f64 / 1000.0,
            );
        }
    }
    if let Some(v) = &r.verify {
        out.insert("verify_mismatches".into(), v.mismatches as f64);
    }
    out.insert("iops".into(), r.read.iops + r.write.iops);
    for (k, v) in &out {
        log.metric(k, *v);
    }
    out
}

/// What the results break: verify mismatches and the step's thresholds.
fn check(io: &IoStep, r: &IoReport) -> Vec<String> {
    let mut bad = vec![];
    if let Some(v) = &r.verify {
        if let Some(m) = &v.first {
            bad.push(format!(
                "verify: {} of {} blocks bad; first at offset {:#x}: {}",
                v.mismatches, v.blocks_checked, m.offset, m.reason
            ));
        }
    }
    let t = &io.thresholds;
    let total_iops = r.read.iops + r.write.iops;
    let total_bw = r.read.bw_bytes_per_sec + r.write.bw_bytes_per_sec;
    if let Some(min) = t.min_iops {
        if total_iops < min {
            bad.push(format!(
                "{total_iops:.0} IOPS is below the minimum {min:.0}"
            ));
        }
    }
    if let Some(min) = t.min_bandwidth {
        if total_bw < min as f64 {
            bad.push(format!(
                "{:.1} MiB/s is below the minimum {:.1} MiB/s",
                total_bw / 1048576.0,
                min as f64 / 1048576.0
            ));
        }
    }
    let worst = |f: fn(&io::histogram::Summary) -> u64| f(&r.read.lat).max(f(&r.write.lat));
    if let Some(max) = t.max_p99_latency {
        let p99 = worst(|s| s.p99_ns);
        if p99 as u128 > max.as_nanos() {
            bad.push(format!(
                "p99 latency {:.1}us is above {:.1}us",
                p99 as f64 / 1000.0,
                max.as_nanos() as f64 / 1000.0
            ));
        }
    }
    if let Some(max) = t.max_mean_latency {
        let mean = worst(|s| s.mean_ns);
        if mean as u128 > max.as_nanos() {
            bad.push(format!(
                "mean latency {:.1}us is above {:.1}us",
                mean as f64 / 1000.0,
                max.as_nanos() as f64 / 1000.0
            ));
        }
    }
    bad
}
