//! `power_cycle`: power the rig off and on through its power control, then wait for the drive.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nvfarm_model::Outcome;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

pub(super) fn run(
    ctx: &mut Ctx<'_>,
    off_time: Duration,
    wait: bool,
    deadline: Instant,
    log: &mut StepLog<'_>,
) -> StepResult {
    let Some(p) = &ctx.power else {
        return Err(Fail::error(format!(
            "rig {} has no power control (add power = ... to its rig file)",
            ctx.rig.name
        )));
    };
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
