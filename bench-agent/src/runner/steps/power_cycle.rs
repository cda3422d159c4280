//! `power_cycle`: power the rig off and on through its power control, then wait for the drive.

use std::time::{Duration, Instant};

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
    p.cycle(off_time)
        .map_err(|e| Fail::error(format!("power cycle failed: {e}")))?;
    if wait {
        super::wait_for_drive::run(ctx, deadline, log)?;
    }
    Ok("power-cycled".into())
}
