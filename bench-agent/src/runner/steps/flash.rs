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

/// How long power stays off for a power cycle that activates firmware.
const ACTIVATION_OFF_TIME: Duration = Duration::from_secs(2);

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
        power_cycle: ctx.power.clone().map(|p| firmware::PowerCycle {
            describe: p.describe(),
            run: std::sync::Arc::new(move || {
                p.cycle(ACTIVATION_OFF_TIME, &|| false)
                    .map_err(|e| e.to_string())
            }),
        }),
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
    // A drive the update left off the bus: the rig's power control is the recovery left; then read it back.
    let needs_power = report
        .failure
        .as_ref()
        .is_some_and(|f| f.drive_state.contains("needs a power cycle"));
    if needs_power {
        let found = power_cycle_and_read(ctx, deadline, log);
        return Err(Fail::new(outcome_of(kind), format!("{report}; {found}")));
    }
    Err(Fail::new(outcome_of(kind), report.to_string()))
}

fn outcome_of(kind: FailureKind) -> Outcome {
    match kind {
        FailureKind::Rejected | FailureKind::Verification => Outcome::Failed,
        FailureKind::Timeout => Outcome::TimedOut,
        FailureKind::Cancelled => Outcome::Cancelled,
        // The image cannot be used on this drive: the submitter's to fix, not the rig's fault.
        FailureKind::BadInput => Outcome::Invalid,
        // The drive needs a reset this rig cannot give (no power control): the rig's shortcoming.
        FailureKind::Unreachable | FailureKind::ResetUnavailable => Outcome::Error,
    }
}

/// Power-cycles the rig (when it has power control), waits for the drive and says what it runs now.
fn power_cycle_and_read(ctx: &mut Ctx<'_>, deadline: Instant, log: &mut StepLog<'_>) -> String {
    let Some(p) = &ctx.power else {
        return format!(
            "rig {} has no power control: power-cycle it by hand, then restore it",
            ctx.rig.name
        );
    };
    log.line(format!(
        "the drive is off the bus: power cycle via {}",
        p.describe()
    ));
    let never = || false;
    if let Err(e) = p.cycle(Duration::from_secs(2), &never) {
        return format!("the recovery power cycle failed: {e}");
    }
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(30));
    match ctx.drive(Instant::now() + left).and_then(|mut d| {
        d.wait_ready(left).map_err(|e| Fail::error(e.to_string()))?;
        let id = d
            .controller()
            .identify_controller()
            .map_err(|e| Fail::error(e.to_string()))?;
        let slots = d
            .controller()
            .firmware_slot_log()
            .map_err(|e| Fail::error(e.to_string()))?;
        Ok((id.firmware_revision().to_string(), slots.active_slot()))
    }) {
        Ok((rev, slot)) => {
            log.line(format!(
                "after the power cycle the drive runs {rev} from slot {slot}"
            ));
            format!("after a recovery power cycle the drive runs {rev} from slot {slot}")
        }
        Err(f) => format!(
            "after a recovery power cycle the drive still does not answer ({})",
            f.message
        ),
    }
}
