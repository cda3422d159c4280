//! `wait_for_drive`: wait until the drive answers Identify again (it may come back under another name).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flash_tools::device::{DeviceError, Drive};
use nvfarm_model::Outcome;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

pub(crate) fn run(ctx: &mut Ctx<'_>, deadline: Instant, log: &mut StepLog<'_>) -> StepResult {
    // Short command timeouts while polling, so a cancel is noticed within a couple of seconds even if the drive
    // hangs rather than being absent. The drive may be off the bus when the wait starts (removed for a shutdown
    // notification before a power cycle): the wait looks for it, rescanning the bus, until the deadline.
    let left = deadline.saturating_duration_since(Instant::now());
    let t0 = Instant::now();
    let cancel = ctx.opts.cancel.clone();
    let d = match Drive::wait_found(
        ctx.locator.clone(),
        Some(Duration::from_secs(2).min(left.max(Duration::from_millis(100)))),
        left,
        &|| cancel.load(Ordering::Relaxed),
    ) {
        Ok(d) => d,
        Err(DeviceError::Stopped { .. }) => {
            return Err(Fail::new(
                Outcome::Cancelled,
                format!(
                    "cancelled after waiting {:.1}s for the drive",
                    t0.elapsed().as_secs_f64()
                ),
            ))
        }
        Err(e) => return Err(Fail::error(format!("the drive did not come back: {e}"))),
    };
    let msg = format!(
        "drive up as {} after {:.1}s",
        d.controller().device_name(),
        t0.elapsed().as_secs_f64()
    );
    log.line(&msg);
    Ok(msg)
}
