//! `power_cycle`: an orderly power cycle of the rig through its power control (the drive gets a shutdown
//! notification first where its transport can send one, so the cut is not an unsafe shutdown), then wait for the
//! drive.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nvfarm_model::Outcome;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

/// How long to look for the drive to tell it about the shutdown.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    off_time: Duration,
    wait: bool,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let Some(p) = ctx.power.clone() else {
        return Err(Fail::error(format!(
            "rig {} has no power control (add power = ... to its rig file)",
            ctx.rig.name
        )));
    };
    let told = ctx
        .drive(Instant::now() + SHUTDOWN_WAIT)
        .ok()
        .and_then(|d| d.controller().transport().shutdown());
    log.line(match told {
        Some(Ok(true)) => "shutdown notification sent: the drive completed its shutdown".to_string(),
        Some(Ok(false)) => "the drive could not take a shutdown notification (not ready): the power cut counts as an unsafe shutdown".to_string(),
        Some(Err(e)) => format!("the shutdown notification failed ({e}): the power cut counts as an unsafe shutdown"),
        None => "this drive's transport cannot send a shutdown notification: the power cut counts as an unsafe shutdown".to_string(),
    });
    log.line(format!(
        "power cycle via {} (off for {})",
        p.describe(),
        humantime::format_duration(off_time)
    ));
    let cancel = ctx.opts.cancel.clone();
    let cancelled = || cancel.load(Ordering::Relaxed);
    p.cycle(off_time, &cancelled)
        .map_err(|e| Fail::error(format!("power cycle failed: {e}")))?;
    if cancelled() {
        return Err(Fail::new(
            Outcome::Cancelled,
            "cancelled during the power cycle; power is back on, the drive was not waited for",
        ));
    }
    if wait {
        super::wait_for_drive::run(ctx, deadline, log)?;
    }
    Ok("power-cycled".into())
}
