//! `wait_for_drive`: wait until the drive answers Identify again (it may come back under another name).

use std::time::Instant;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

pub(crate) fn run(ctx: &mut Ctx<'_>, deadline: Instant, log: &mut StepLog<'_>) -> StepResult {
    let mut d = ctx.drive(deadline).map_err(|f| Fail::error(f.message))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let t0 = Instant::now();
    d.wait_ready(left)
        .map_err(|e| Fail::error(format!("the drive did not come back: {e}")))?;
    let msg = format!(
        "drive up as {} after {:.1}s",
        d.controller().device_name(),
        t0.elapsed().as_secs_f64()
    );
    log.line(&msg);
    Ok(msg)
}
