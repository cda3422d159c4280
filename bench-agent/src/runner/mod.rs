//! Runs a test plan on one rig: prepares the rig (creating a simulated drive on first use, starting console
//! capture), executes the steps in order within their time limits, and reports every step's outcome, duration,
//! log and metrics.
//!
//! Every step is bounded from the inside: NVMe commands get a timeout no longer than what is left of the step,
//! the io engine's runtime is capped, scripts are killed at the deadline. So a hung drive ends a step as
//! `timed_out` without leaving work behind. After an `error`, `timed_out` or `invalid` step, or a `failed` step
//! whose `on_failure` is `stop`, the remaining steps are `skipped`.
//!
//! - this module: the loop over the steps;
//! - [`preflight`]: what a plan needs from the bench, checked before any step runs;
//! - [`context`]: what a run holds while its steps execute (the rig, the drive, console, placeholders);
//! - [`steps`]: one executor per step kind.

mod context;
mod history;
pub mod preflight;
mod steps;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use flash_tools::device::Sysfs;
use nvfarm_model::plan::{OnFailure, Plan, Step};
use nvfarm_model::time::now_ms;
use nvfarm_model::{FirmwareInfo, Outcome, RunReport, StepReport};

use crate::rigs::{Inventory, Rig};
use context::{Ctx, StepLog};

/// The firmware build under test.
#[derive(Clone, Debug)]
pub struct Firmware {
    /// Where the image came from (or the name it was uploaded under).
    pub path: PathBuf,
    /// The image.
    pub bytes: Vec<u8>,
    /// sha256 of the image, hex.
    pub sha256: String,
    /// The revision the build reports once running, when the caller knows it (e.g. from the build system);
    /// otherwise the flash step learns it from the drive's slot log after the commit.
    pub revision: Option<String>,
}

impl Firmware {
    /// Reads the image at `path`; `revision` is what the caller says it is, if known.
    pub fn load(path: &Path, revision: Option<String>) -> Result<Self, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read firmware {}: {e}", path.display()))?;
        if bytes.is_empty() {
            return Err(format!("firmware {} is empty", path.display()));
        }
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(Firmware {
            path: path.to_path_buf(),
            bytes,
            sha256,
            revision,
        })
    }
}

/// Live progress of a run.
pub trait Observer {
    /// A step starts.
    fn step_started(&mut self, _step: &Step) {}
    /// A step logged a line.
    fn log(&mut self, _step: &Step, _line: &str) {}
    /// A step ended (also called for steps skipped or cancelled without running).
    fn step_finished(&mut self, _step: &Step, _report: &StepReport) {}
}

/// Observes nothing.
#[derive(Debug, Default)]
pub struct Quiet;
impl Observer for Quiet {}

/// How a run is done.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Where drives are looked up by serial or PCI address.
    pub sysfs: Sysfs,
    /// Set to cancel: the running step finishes its current command, the rest are cancelled.
    pub cancel: Arc<AtomicBool>,
    /// Where each rig keeps the metrics of its last run of each plan (`baseline = "previous"`); none: no
    /// history is read or kept.
    pub history: Option<PathBuf>,
}

/// Runs `plan` on `rig` (from `inventory`). Never panics on drive behaviour: everything is in the report.
pub fn run_plan(
    plan: &Plan,
    inventory: &Inventory,
    rig: &Rig,
    firmware: Option<&Firmware>,
    opts: &RunOptions,
    observer: &mut dyn Observer,
) -> RunReport {
    let started = Instant::now();
    let mut report = RunReport {
        plan_changes: Vec::new(),
        plan: plan.name.clone(),
        rig: rig.name.clone(),
        firmware: firmware.map(|f| FirmwareInfo {
            file: f.path.display().to_string(),
            sha256: f.sha256.clone(),
            bytes: f.bytes.len() as u64,
            revision: f.revision.clone(),
        }),
        outcome: Outcome::Passed,
        started_at_ms: now_ms(),
        duration_ms: 0,
        steps: vec![],
        console: vec![],
    };
    // A plan this bench will not run is invalid input, found before anything is touched.
    if let Err(refused) = preflight::check(plan, inventory, rig) {
        report.steps.push(StepReport {
            number: 0,
            name: "preflight".into(),
            kind: "preflight".into(),
            outcome: Outcome::Invalid,
            message: format!(
                "the plan cannot run on rig {}: step {}: {}",
                rig.name, refused.step, refused.reason
            ),
            ..StepReport::default()
        });
        for s in &plan.steps {
            report.steps.push(not_run(
                s,
                Outcome::Skipped,
                "not run: the plan cannot run on this bench",
            ));
        }
        report.outcome = Outcome::Invalid;
        report.duration_ms = started.elapsed().as_millis() as u64;
        return report;
    }
    let history = opts
        .history
        .as_ref()
        .map(|dir| history::file(dir, &rig.name, &plan.name));
    let previous = history.as_deref().map(history::load).unwrap_or_default();
    let mut ctx = match Ctx::prepare(inventory, rig, firmware, opts) {
        Ok(mut c) => {
            c.previous = previous.clone();
            c
        }
        Err(message) => {
            report.steps.push(StepReport {
                number: 0,
                name: "setup".into(),
                kind: "setup".into(),
                outcome: Outcome::Error,
                duration_ms: started.elapsed().as_millis() as u64,
                message: format!("rig {} is not usable: {message}", rig.name),
                ..StepReport::default()
            });
            for s in &plan.steps {
                report.steps.push(not_run(
                    s,
                    Outcome::Skipped,
                    "not run: the rig could not be set up",
                ));
            }
            report.outcome = Outcome::Error;
            report.duration_ms = started.elapsed().as_millis() as u64;
            return report;
        }
    };
    // Why the remaining steps do not run. A cancel marks the step it interrupted (or, between steps, the next
    // one) `cancelled`; every step after that is `skipped`.
    let mut stop_reason: Option<String> = None;
    for step in &plan.steps {
        if let Some(why) = &stop_reason {
            let r = not_run(step, Outcome::Skipped, why);
            observer.step_finished(step, &r);
            report.steps.push(r);
            continue;
        }
        if opts.cancel.load(Ordering::Relaxed) {
            let r = not_run(step, Outcome::Cancelled, "cancelled before it ran");
            observer.step_finished(step, &r);
            report.steps.push(r);
            stop_reason = Some("not run: the run was cancelled".into());
            continue;
        }
        observer.step_started(step);
        let t0 = Instant::now();
        let mut log = StepLog::new(step, &mut *observer, t0);
        let result = steps::exec(&mut ctx, step, t0 + step.timeout, &mut log);
        ctx.flush_console(&mut log);
        // Each step classifies its own end: a hung command is `timed_out`, a check that waited its full time for
        // something that never came (a console line) is `failed`.
        let (outcome, message) = match result {
            Ok(msg) => (Outcome::Passed, msg),
            Err(fail) => (fail.outcome, fail.message),
        };
        let (lines, metrics) = log.finish();
        let r = StepReport {
            number: step.number,
            name: step.name.clone(),
            kind: step.kind.name().to_string(),
            outcome,
            duration_ms: t0.elapsed().as_millis() as u64,
            message,
            log: lines,
            metrics,
        };
        observer.step_finished(step, &r);
        report.steps.push(r);
        stop_reason = match outcome {
            Outcome::Error | Outcome::TimedOut | Outcome::Invalid => Some(format!(
                "not run: step {} ({}) ended {outcome}",
                step.number, step.name
            )),
            Outcome::Cancelled => Some("not run: the run was cancelled".into()),
            Outcome::Failed if step.on_failure == OnFailure::Stop => Some(format!(
                "not run: step {} ({}) failed",
                step.number, step.name
            )),
            _ => None,
        };
    }
    if let Some(fw) = &mut report.firmware {
        fw.revision = ctx.var("firmware.revision").or(fw.revision.take());
    }
    report.outcome = Outcome::overall(report.steps.iter().map(|s| s.outcome));
    report.console = ctx.console_lines();
    report.duration_ms = started.elapsed().as_millis() as u64;
    if let Some(path) = &history {
        if let Err(e) = history::save(path, &previous, &report) {
            tracing::warn!(path = %path.display(), "cannot keep this run's metrics for the next comparison: {e}");
        }
    }
    report
}

/// A step that did not run.
fn not_run(step: &Step, outcome: Outcome, why: &str) -> StepReport {
    StepReport {
        number: step.number,
        name: step.name.clone(),
        kind: step.kind.name().to_string(),
        outcome,
        duration_ms: 0,
        message: why.to_string(),
        ..StepReport::default()
    }
}
