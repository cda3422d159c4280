//! `wait_for_drive`: wait until the drive answers Identify again (it may come back under another name).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flash_tools::device::DeviceError;
use nvfarm_model::Outcome;

use super::super::context::{Ctx, Fail, StepLog, StepResult};

pub(crate) fn run(ctx: &mut Ctx<'_>, deadline: Instant, log: &mut StepLog<'_>) -> StepResult {
    // Short command timeouts while polling, so a cancel is noticed within a couple of seconds even if the drive
    // hangs rather than being absent.
    let poll = Instant::now() + Duration::from_secs(2);
    let mut d = ctx
        .drive(poll.min(deadline))
        .map_err(|f| Fail::error(f.message))?;
    let left = deadline.saturating_duration_since(Instant::now());
    let t0 = Instant::now();
    let cancel = ctx.opts.cancel.clone();
    match d.wait_ready_until(left, &|| cancel.load(Ordering::Relaxed)) {
        Ok(()) => {}
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
    }
    let msg = format!(
        "drive up as {} after {:.1}s",
        d.controller().device_name(),
        t0.elapsed().as_secs_f64()
    );
    log.line(&msg);
    Ok(msg)
}
