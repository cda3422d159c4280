//! `flash`: the firmware update flow on the rig's drive, with the build under test.

use std::time::{Duration, Instant};

use flash_tools::firmware::{self, FailureKind, UpdateEvent, UpdateOptions, UpdateResult};
use nvfarm_model::Outcome;
use nvme_spec::Activation;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

/// Forwards the update flow's events to the step's log.
struct Forward<'l, 'o> {
    log: &'l mut StepLog<'o>,
}

impl firmware::Progress for Forward<'_, '_> {
    fn event(&mut self, e: &UpdateEvent) {
        self.log.line(format!("{}: {}", e.step, e.message));
    }
}

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    activation: Activation,
    slot: Option<u8>,
    wait_timeout: Duration,
    rollback: bool,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let Some(fw) = ctx.firmware else {
        return Err(Fail::error(
            "this plan flashes firmware but no firmware image was given",
        ));
    };
    let mut drive = ctx.drive(deadline)?;
    let left = deadline.saturating_duration_since(Instant::now());
    let opts = UpdateOptions {
        slot,
        activation,
        sha256: Some(fw.sha256.clone()),
        expect_revision: fw.revision.clone(),
        rollback,
        come_back_timeout: wait_timeout.min(left),
        cancel: Some(ctx.opts.cancel.clone()),
        ..UpdateOptions::default()
    };
    let report = firmware::update(&mut drive, &fw.bytes, &opts, &mut Forward { log });
    log.metric("flash_seconds", report.elapsed_ms as f64 / 1000.0);
    log.metric("download_chunks", report.chunks as f64);
    if report.succeeded() {
        let rev = match report.outcome {
            UpdateResult::Updated => report
                .running_revision
                .clone()
                .or(report.expected_revision.clone()),
            _ => report.expected_revision.clone(),
        };
        if let Some(rev) = rev {
            ctx.vars.insert("firmware.revision".into(), rev);
        }
        return Ok(report.to_string());
    }
    let kind = report
        .failure
        .as_ref()
        .map(|f| f.kind)
        .unwrap_or(FailureKind::Verification);
    let outcome = match kind {
        FailureKind::Rejected | FailureKind::Verification => Outcome::Failed,
        FailureKind::Timeout => Outcome::TimedOut,
        FailureKind::Cancelled => Outcome::Cancelled,
        // The image cannot be used on this drive: the submitter's to fix, not the rig's fault.
        FailureKind::BadInput => Outcome::Invalid,
        FailureKind::Unreachable => Outcome::Error,
    };
    Err(Fail::new(outcome, report.to_string()))
}
